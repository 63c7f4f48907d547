"""The high-frequency share of feature maps over the token grid, after the Fourier analysis of Park et al., "What do
self-supervised vision transformers learn?" (ICLR 2023; reference code naver-ai/cl-vs-mim,
``representation_analysis.ipynb``, ``fourier``), which reads the 2-D FFT amplitude of each channel of the patch-token
map along the diagonal of the centred spectrum, from frequency 0 towards π (rad per token), relative to 0.

Here one number per channel: the share of the amplitude outside the low-frequency band,

    share = Σ_{(u, v) outside the band} |F(u, v)| / Σ_{all (u, v)} |F(u, v)|,

F the unnormalised 2-D DFT of one channel's (h, w) map (the mean, frequency 0, included). Bin (u, v) has angular
frequencies ω_u = 2π·u'/h and ω_v = 2π·v'/w per token, u' and v' the signed bin indices (``torch.fft.fftfreq``
order), so |ω| ≤ π; the low band is the square max(|ω_u|, |ω_v|) ≤ cutoff · π, ``cutoff`` = 1/2 by default: the
inner half of the reference's diagonal, from 0 to π/2. A constant map has share 0; a checkerboard (±1 alternating,
even h and w: all amplitude at ω = (π, π)) has share 1. Channels of zero amplitude have no share and are left out.
"""

from __future__ import annotations

import torch

from mimlens.errors import MimlensError

__all__ = ["DEFAULT_CUTOFF", "check_cutoff", "high_frequency_share", "low_band"]

DEFAULT_CUTOFF = 0.5


def check_cutoff(cutoff: float) -> None:
    """Refuse a cutoff outside [0, 1) (a fraction of π) with a :class:`MimlensError`."""
    if isinstance(cutoff, bool) or not isinstance(cutoff, int | float) or not 0 <= cutoff < 1:
        raise MimlensError(f"cutoff={cutoff!r}: expected a fraction of π in [0, 1)")


def low_band(grid: tuple[int, int], cutoff: float = DEFAULT_CUTOFF) -> torch.Tensor:
    """(h, w) bool in FFT bin order: True for the bins with max(|ω_u|, |ω_v|) ≤ cutoff · π."""
    check_cutoff(cutoff)
    rows, cols = (2 * torch.fft.fftfreq(n, dtype=torch.float64).abs() <= cutoff for n in grid)
    return rows[:, None] & cols[None, :]


def high_frequency_share(maps: torch.Tensor, cutoff: float = DEFAULT_CUTOFF) -> torch.Tensor:
    """The high-frequency share of each (B, C, h, w) channel map, (B, C) float32 or float64; NaN where a channel's
    amplitude is 0."""
    if maps.dim() != 4:
        raise MimlensError(f"feature maps of shape {tuple(maps.shape)}: expected (B, C, h, w)")
    x = maps.float() if maps.dtype in (torch.float16, torch.bfloat16) else maps
    amplitude = torch.fft.fft2(x).abs()
    high = ~low_band(tuple(maps.shape[-2:]), cutoff).to(amplitude.device)
    total = amplitude.sum((-2, -1))
    return torch.where(total > 0, (amplitude * high).sum((-2, -1)) / total, torch.nan)
