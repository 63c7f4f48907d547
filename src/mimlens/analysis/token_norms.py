"""High-norm patch tokens, after Darcet et al., "Vision Transformers Need Registers" (ICLR 2024): a few patch tokens
whose output norm is far above the others', at positions of low information, in the later blocks of large models.

One pass with a fixed-size sketch: every patch-token norm ‖x‖₂ of a block is rounded to a log-spaced bin
(``BINS_PER_DECADE`` bins per decade over [10^``LOW_DECADE``, 10^``HIGH_DECADE``], norms outside clamped to the
range) and counted per bin and token position. At the end, on the rounded norms (each the geometric centre of its
bin, within 3.7 % of the norm), the rule of Iglewicz and Hoaglin's modified z-score applies to the block's norms over
all images and positions:

    high-norm  ⇔  0.6745 · (‖x‖ − median) / MAD > 3.5,   MAD = median |‖x‖ − median|,

medians being lower medians (the ⌈n/2⌉-th smallest); a MAD below one bin's width (median · (10^(1/32) − 1)) is
raised to it, so that a block whose norms fall in one bin flags nothing. The sketch adds across batches and
processes exactly, so the threshold is that of all images at once.
"""

from __future__ import annotations

import math

import torch

__all__ = ["BINS_PER_DECADE", "HIGH_DECADE", "LOW_DECADE", "MODIFIED_Z", "NUM_BINS", "bin_values", "norm_bins",
           "threshold", "weighted_lower_median"]

BINS_PER_DECADE = 32
LOW_DECADE, HIGH_DECADE = -3, 5
NUM_BINS = (HIGH_DECADE - LOW_DECADE) * BINS_PER_DECADE
MODIFIED_Z = 3.5
_Z_SCALE = 0.6745


def norm_bins(norms: torch.Tensor) -> torch.Tensor:
    """The bin index (long, 0 … NUM_BINS − 1) of each norm."""
    logs = norms.double().clamp_min(10.0**LOW_DECADE).log10()
    return ((logs - LOW_DECADE) * BINS_PER_DECADE).floor().long().clamp_(0, NUM_BINS - 1)


def bin_values(device: torch.device | str | None = None) -> torch.Tensor:
    """The geometric centre of every bin, (NUM_BINS,) float64: the value a norm is rounded to."""
    index = torch.arange(NUM_BINS, dtype=torch.float64, device=device)
    return 10.0 ** (LOW_DECADE + (index + 0.5) / BINS_PER_DECADE)


def weighted_lower_median(values: torch.Tensor, counts: torch.Tensor) -> float:
    """The ⌈n/2⌉-th smallest of the values, each repeated ``counts`` times (n = Σ counts > 0)."""
    order = values.argsort()
    cumulative = counts[order].cumsum(0)
    rank = math.ceil(cumulative[-1].item() / 2)
    return values[order][torch.searchsorted(cumulative, torch.tensor(float(rank), dtype=cumulative.dtype))].item()


def threshold(histogram: torch.Tensor) -> dict[str, float]:
    """Median, MAD (floored at one bin) and the high-norm threshold of the rounded norms counted in ``histogram``
    (NUM_BINS,); NaN for an empty histogram."""
    if histogram.sum() <= 0:
        return {"median": math.nan, "mad": math.nan, "threshold": math.nan}
    values = bin_values(histogram.device)
    median = weighted_lower_median(values, histogram)
    mad = max(weighted_lower_median((values - median).abs(), histogram), median * (10 ** (1 / BINS_PER_DECADE) - 1))
    return {"median": median, "mad": mad, "threshold": median + MODIFIED_Z / _Z_SCALE * mad}
