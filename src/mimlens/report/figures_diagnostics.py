"""The figures of ``diagnostics.json`` (:mod:`mimlens.analysis.diagnostics`), blocks on the x axis, one colour per
model: attention NMI (small dots heads, large dots the block mean, dashed uniform attention over the same keys), the
high-frequency share of the block's features, and high-norm tokens per image with the map of their positions in the
block that has most of them (one map per model).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mimlens.analysis.diagnostics import Diagnostics
from mimlens.report.figures_attention import run_colour
from mimlens.report.style import save_png

__all__ = ["FIGURES", "save_diagnostics_figures"]

FIGURES = ("diagnostics_nmi", "diagnostics_high_frequency", "diagnostics_high_norm")


def _ticks(result: Diagnostics) -> list[str]:
    """``stage.block`` for models of several stages, else the block index."""
    if len({b.stage for b in result.blocks}) == 1:
        return [str(i) for i in range(len(result.blocks))]
    ticks, block = [], 0
    for i, info in enumerate(result.blocks):
        block = block + 1 if i and info.stage == result.blocks[i - 1].stage else 0
        ticks.append(f"{info.stage}.{block}")
    return ticks


def _block_axis(ax, result: Diagnostics, ylabel: str) -> None:
    ticks = _ticks(result)
    ax.set_xticks(range(len(ticks)))
    ax.set_xticklabels(ticks, fontsize=7, rotation=90 if len(ticks) > 24 else 0)
    ax.set_xlabel("stage.block" if "." in ticks[0] else "block")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)


def _nmi(items: list[Diagnostics], labels: list[str], path: Path, title: str | None) -> Path:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(5.0, 0.42 * max(len(r.blocks) for r in items) + 2.5), 4.0))
    ax = figure.subplots()
    for m, (result, label) in enumerate(zip(items, labels, strict=True)):
        colour, xs = run_colour(m), range(len(result.blocks))
        ax.scatter([x for x, v in zip(xs, result.nmi, strict=True) for _ in range(v.numel())],
                   [float(h) for v in result.nmi for h in v], s=12, color=colour, alpha=0.5, linewidths=0)
        ax.plot(xs, result.block_series()["nmi"], color=colour, marker="o", label=label)
        ax.plot(xs, result.uniform_nmi, color=colour, linestyle="--", alpha=0.8, label=f"{label}: uniform attention")
    _block_axis(ax, max(items, key=lambda r: len(r.blocks)), "attention NMI (query, key)")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_png(figure, path)


def _high_frequency(items: list[Diagnostics], labels: list[str], path: Path, title: str | None) -> Path:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(5.0, 0.42 * max(len(r.blocks) for r in items) + 2.5), 4.0))
    ax = figure.subplots()
    for m, (result, label) in enumerate(zip(items, labels, strict=True)):
        ax.plot(range(len(result.blocks)), result.high_frequency_share, color=run_colour(m), marker="o", label=label)
    cutoff = items[0].cutoff
    _block_axis(ax, max(items, key=lambda r: len(r.blocks)), f"amplitude share above {cutoff:g}π")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_png(figure, path)


def _high_norm(items: list[Diagnostics], labels: list[str], path: Path, title: str | None) -> Path:
    from matplotlib.figure import Figure

    width = max(5.0, 0.42 * max(len(r.blocks) for r in items) + 2.5)
    figure = Figure(figsize=(width + 3.2 * len(items), 4.0))
    axes = figure.subplots(1, 1 + len(items), gridspec_kw={"width_ratios": [width] + [3.2] * len(items)})
    for m, (result, label) in enumerate(zip(items, labels, strict=True)):
        axes[0].plot(range(len(result.blocks)), result.high_norm_per_image, color=run_colour(m), marker="o",
                     label=label)
        block = max(range(len(result.blocks)), key=lambda i: (result.high_norm_per_image[i], i))
        image = axes[1 + m].imshow(result.high_norm_positions[block].numpy(), cmap="magma", vmin=0, vmax=1)
        figure.colorbar(image, ax=axes[1 + m], fraction=0.046, pad=0.04)
        axes[1 + m].set_title(f"{label}: {result.blocks[block].name}", fontsize=8)
        axes[1 + m].set_xticks([])
        axes[1 + m].set_yticks([])
    _block_axis(axes[0], max(items, key=lambda r: len(r.blocks)), "high-norm patch tokens per image")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_png(figure, path)


def save_diagnostics_figures(docs: Sequence[dict[str, Any] | Diagnostics], out_dir: str | os.PathLike,
                             labels: Sequence[str], title: str | None = None) -> dict[str, Path]:
    """``diagnostics_nmi.png``, ``diagnostics_high_frequency.png`` and ``diagnostics_high_norm.png`` in
    ``out_dir``, one colour per model (``labels`` name them)."""
    items = [d if isinstance(d, Diagnostics) else Diagnostics.from_json(d) for d in docs]
    out_dir, labels = Path(out_dir), list(labels)
    draw = (_nmi, _high_frequency, _high_norm)
    return {stem: plot(items, labels, out_dir / f"{stem}.png", title) for stem, plot in zip(FIGURES, draw, strict=True)}
