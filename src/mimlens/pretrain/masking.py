"""SimMIM's random block masking and its AvgDist statistic.

SimMIM ("SimMIM: a Simple Framework for Masked Image Modeling", Xie et al. 2022) masks an image by
splitting it into blocks of ``mask_patch_size`` pixels and masking exactly ``ceil(ratio * blocks)`` of
them, chosen uniformly; the block mask is then upsampled to the model's token grid. "Revealing the Dark
Secrets of Masked Image Modeling" summarises a masking setting by **AvgDist**: the mean Euclidean
distance from a masked pixel to the nearest visible pixel, averaged over masked pixels and many masks.
Moderate values (about 10–20 px at 224 px) fine-tune best.

Conventions: ``True`` means masked. Image sizes are ``int`` (square) or ``(height, width)``. Distances
are in input pixels between pixel centres (scipy's Euclidean distance transform), so a masked pixel
next to a visible one is at distance 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from mimlens.errors import MimlensError

__all__ = [
    "PAPER_MASK_PATCH_SIZES",
    "PAPER_RATIOS",
    "avg_dist",
    "avg_dist_sweep",
    "masked_distance",
    "random_block_mask",
    "random_block_masks",
]

#: The grid of SimMIM masking settings that the paper's AvgDist figure sweeps.
PAPER_MASK_PATCH_SIZES = (4, 8, 16, 32)
PAPER_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _hw(img_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(img_size, int):
        return img_size, img_size
    if len(img_size) != 2:
        raise MimlensError(f"img_size must be an int or (height, width), got {img_size!r}")
    return int(img_size[0]), int(img_size[1])


def _block_grid(img_size: int | Sequence[int], mask_patch_size: int, model_patch_size: int) -> tuple[int, int]:
    """Number of mask blocks along (height, width), after checking that every size divides."""
    height, width = _hw(img_size)
    if mask_patch_size <= 0 or model_patch_size <= 0:
        raise MimlensError(
            f"mask_patch_size ({mask_patch_size}) and model_patch_size ({model_patch_size}) must be positive"
        )
    if height % mask_patch_size or width % mask_patch_size:
        raise MimlensError(
            f"img_size {height}x{width} is not divisible by mask_patch_size {mask_patch_size}: "
            "choose a mask patch size that divides the image side"
        )
    if mask_patch_size % model_patch_size:
        raise MimlensError(
            f"mask_patch_size {mask_patch_size} is not a multiple of model_patch_size {model_patch_size}: "
            "a mask block must cover whole tokens"
        )
    return height // mask_patch_size, width // mask_patch_size


def _num_masked(ratio: float, num_blocks: int) -> int:
    if not 0.0 <= ratio <= 1.0:
        raise MimlensError(f"mask ratio must lie in [0, 1], got {ratio}")
    return math.ceil(ratio * num_blocks)


def random_block_masks(batch_size: int, img_size: int | Sequence[int], mask_patch_size: int, model_patch_size: int,
                       ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A batch of SimMIM masks on the model's token grid: bool ``(B, H // model_patch, W // model_patch)``.

    Each mask has exactly ``ceil(ratio * blocks)`` masked blocks, an independent uniform choice per mask.
    """
    rows, cols = _block_grid(img_size, mask_patch_size, model_patch_size)
    num_masked = _num_masked(ratio, rows * cols)
    order = torch.rand(batch_size, rows * cols, generator=generator).argsort(dim=1)
    blocks = torch.zeros(batch_size, rows * cols, dtype=torch.bool)
    blocks.scatter_(1, order[:, :num_masked], True)
    scale = mask_patch_size // model_patch_size
    return blocks.view(batch_size, rows, cols).repeat_interleave(scale, 1).repeat_interleave(scale, 2)


def random_block_mask(img_size: int | Sequence[int], mask_patch_size: int, model_patch_size: int, ratio: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """One SimMIM mask on the model's token grid: bool ``(H // model_patch, W // model_patch)``."""
    return random_block_masks(1, img_size, mask_patch_size, model_patch_size, ratio, generator)[0]


def masked_distance(masks: np.ndarray | torch.Tensor) -> float:
    """Mean distance from a masked pixel to the nearest visible pixel of the same mask, over all masked pixels
    of the pixel-level masks ``(N, H, W)`` (``True`` = masked; pixels outside the image are not visible)."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.all(axis=(1, 2)).any():
        raise MimlensError("a mask has no visible pixel, so the distance to the nearest visible pixel is undefined")
    count = int(masks.sum())
    if count == 0:
        return 0.0
    return sum(float(distance_transform_edt(mask)[mask].sum()) for mask in masks) / count


def avg_dist(
    img_size: int | Sequence[int],
    mask_patch_size: int,
    ratio: float,
    num_masks: int = 200,
    seed: int = 0,
) -> float:
    """AvgDist in pixels of SimMIM random masking: :func:`masked_distance` of ``num_masks`` pixel-level masks.

    Every mask has the same number of masked pixels, so this is also the mean of the per-mask means.
    """
    if num_masks < 1:
        raise MimlensError(f"num_masks must be at least 1, got {num_masks}")
    rows, cols = _block_grid(img_size, mask_patch_size, 1)
    if _num_masked(ratio, rows * cols) == rows * cols:
        raise MimlensError(f"mask ratio {ratio} masks every block, so AvgDist is undefined")
    generator = torch.Generator().manual_seed(seed)
    return masked_distance(random_block_masks(num_masks, img_size, mask_patch_size, 1, ratio, generator).numpy())


def avg_dist_sweep(
    img_size: int | Sequence[int] = 224,
    mask_patch_sizes: Sequence[int] = PAPER_MASK_PATCH_SIZES,
    ratios: Sequence[float] = PAPER_RATIOS,
    num_masks: int = 200,
    seed: int = 0,
) -> list[dict[str, float | None]]:
    """AvgDist over a grid of mask patch sizes × ratios: rows ``{"mask_patch_size", "ratio", "avg_dist_px"}``.

    A setting that masks every block (few large blocks and a high ratio) has no AvgDist: ``None``.
    """
    if num_masks < 1:
        raise MimlensError(f"num_masks must be at least 1, got {num_masks}")
    rows = []
    for patch in mask_patch_sizes:
        rows_, cols = _block_grid(img_size, patch, 1)
        for ratio in ratios:
            defined = _num_masked(ratio, rows_ * cols) < rows_ * cols
            value = avg_dist(img_size, patch, ratio, num_masks, seed) if defined else None
            rows.append({"mask_patch_size": int(patch), "ratio": float(ratio), "avg_dist_px": value})
    return rows
