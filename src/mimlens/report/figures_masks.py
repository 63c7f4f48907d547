"""Figures of SimMIM masking (the paper's finding F2, Fig. 2a): AvgDist against the mask ratio, one line per
mask patch size, with the paper's "moderate" band shaded; and example masks laid over a bundled photo.

The band is 10–20 px at 224 px; at another image size it is scaled by ``img_size / 224`` (AvgDist scales
with the image when the mask patch scales with it) and the legend says so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mimlens.report.style import save_png

__all__ = ["MODERATE_BAND_224", "moderate_band", "plot_avg_dist", "plot_mask_examples"]

MODERATE_BAND_224 = (10.0, 20.0)  # AvgDist in pixels at 224 px that fine-tunes best in the paper


def moderate_band(img_size: int) -> tuple[float, float]:
    """The paper's moderate AvgDist band scaled to an image side of ``img_size`` pixels."""
    scale = img_size / 224
    return MODERATE_BAND_224[0] * scale, MODERATE_BAND_224[1] * scale


def _save(figure, path: str | os.PathLike) -> Path:
    return save_png(figure, path)


def plot_avg_dist(rows: Sequence[Mapping[str, float]], img_size: int, path: str | os.PathLike) -> Path:
    """AvgDist (px) against mask ratio for each mask patch size in ``rows`` (``mask_patch_size``, ``ratio``,
    ``avg_dist_px``, None where undefined); writes a PNG atomically and returns its path."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(6.4, 4.4))
    axes = figure.add_subplot()
    low, high = moderate_band(img_size)
    scaled = "" if img_size == 224 else f", scaled to {img_size} px"
    axes.axhspan(low, high, color="#2b59c3", alpha=0.12, label=f"moderate: 10–20 px at 224 px{scaled}")
    for patch in sorted({int(r["mask_patch_size"]) for r in rows}):
        points = sorted((r["ratio"], r["avg_dist_px"]) for r in rows
                        if int(r["mask_patch_size"]) == patch and r["avg_dist_px"] is not None)
        if not points:
            continue
        ratios, values = zip(*points, strict=True)
        axes.plot(ratios, values, marker="o", label=f"mask patch {patch} px")
    axes.set_xlabel("mask ratio")
    axes.set_ylabel("AvgDist (px)")
    axes.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(plain)
    axes.tick_params(axis="y", which="minor", labelsize=7)
    axes.set_title(f"AvgDist of SimMIM random masking, {img_size} px images", fontsize=11)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def plot_mask_examples(
    examples: Mapping[tuple[int, float], np.ndarray], image: np.ndarray, path: str | os.PathLike
) -> Path:
    """One example mask per (mask patch size, ratio) laid over ``image`` (H, W, 3 in [0, 1]): masked pixels
    grey. ``examples`` maps the setting to a pixel-level bool mask (H, W), ``True`` = masked."""
    from matplotlib.figure import Figure

    patches = sorted({p for p, _ in examples})
    ratios = sorted({r for _, r in examples})
    figure = Figure(figsize=(1.6 * len(ratios) + 0.6, 1.7 * len(patches) + 0.4))
    grid = figure.subplots(len(patches), len(ratios), squeeze=False)
    for i, patch in enumerate(patches):
        for j, ratio in enumerate(ratios):
            axes = grid[i][j]
            axes.set_xticks([])
            axes.set_yticks([])
            mask = examples.get((patch, ratio))
            if mask is None:
                axes.set_axis_off()
                continue
            axes.imshow(np.where(mask[..., None], 0.5, image), interpolation="nearest")
            if i == 0:
                axes.set_title(f"ratio {ratio:g}", fontsize=8)
            if j == 0:
                axes.set_ylabel(f"patch {patch} px", fontsize=8)
    figure.suptitle("Example SimMIM masks (grey = masked)", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)
