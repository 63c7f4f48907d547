"""Attention statistics against training step, from ``attention_over_training.json``.

Three panels share the step axis: mean attention distance (px), mean entropy (nats) and mean head KL per
layer, each a mean over the layer's heads. One line per layer, coloured from light (first layer) to dark
(last layer); a step where a layer has no value leaves a gap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mimlens.report.style import save_png

__all__ = ["plot_attention_over_training"]

_PANELS = (("distance_px", "mean attention distance (px)"), ("entropy", "mean attention entropy (nats)"),
           ("head_kl_mean", "mean KL between heads"))


def plot_attention_over_training(summary: Mapping[str, Any], path: str | os.PathLike, title: str | None = None) -> Path:
    """Write the PNG of one run's per-layer statistics against training step (atomically); returns its path."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    steps, layers = list(summary["steps"]), list(summary["layers"])
    figure = Figure(figsize=(4.2 * len(_PANELS), 3.8))
    axes = figure.subplots(1, len(_PANELS), squeeze=True)
    colours = colormaps["viridis_r"]
    for ax, (key, label) in zip(axes, _PANELS, strict=True):
        for index, layer in enumerate(layers):
            values = [float("nan") if row[index] is None else row[index] for row in summary[key]]
            colour = colours(0.15 + 0.8 * index / max(1, len(layers) - 1))
            ax.plot(steps, values, marker="o", markersize=3, linewidth=1.2, color=colour, label=layer)
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=6, frameon=False, loc="best", ncol=1 + len(layers) // 13)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_png(figure, path)
