"""Frozen, layer-wise probes of the downstream tasks: ridge probes and training-free correlation tracking."""
