"""Downstream tasks: heads, losses, metrics and data readers for classification, depth, pose and tracking.

Every metric is an accumulator of per-image (or per-sequence) sums divided once in ``compute()``, so a
batch of n equals n batches of one and processes merge with one all-reduce.
"""
