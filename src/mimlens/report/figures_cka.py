"""CKA heat maps (the paper's finding F5): layer x layer within one model, or layers of model a x model b.

Layer 0 sits at the bottom left, as in the paper. The colour scale is fixed to [0, 1] so maps of different
models compare by eye; the title names the model(s), the subtitle the estimator, the sample unit and the number
of images. Cells without a value (NaN, explained in the result's notes) are grey and hatched.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mimlens.analysis.cka import CKAResult
from mimlens.report.style import save_png

__all__ = ["plot_cka"]

MAX_LABELS = 32  # beyond this many layers only every k-th tick is labelled
MAX_ANNOTATED = 12  # cells carry their value up to this many layers per side


def plot_cka(result: CKAResult | Mapping[str, Any], path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw ``result`` (a :class:`CKAResult` or its ``to_json()`` dict) as a heat map; write a PNG to ``path``.

    Returns the path written (atomically).
    """
    from matplotlib.figure import Figure

    if not isinstance(result, CKAResult):
        result = CKAResult.from_json(result)
    matrix = result.matrix.double().cpu().numpy()
    rows, cols = matrix.shape
    side = min(14.0, max(5.0, 0.3 * max(rows, cols) + 3.0))
    figure = Figure(figsize=(side + 1.2, side + 0.6))
    axes = figure.add_subplot()
    axes.set_facecolor("#d9d9d9")
    image = axes.imshow(matrix, origin="lower", vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest",
                        aspect="auto")
    for i, j in zip(*((matrix != matrix).nonzero()), strict=True):
        axes.add_patch(_hatched_cell(j, i))
    _label_ticks(axes.set_yticks, axes.set_yticklabels, result.layers_a, rotation=0)
    _label_ticks(axes.set_xticks, axes.set_xticklabels, result.layers_b, rotation=90)
    if max(rows, cols) <= MAX_ANNOTATED:
        for i in range(rows):
            for j in range(cols):
                if not math.isnan(matrix[i, j]):
                    axes.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                              color="black" if matrix[i, j] > 0.6 else "white")
    model_a = result.model_a or "model a"
    if result.within:
        axes.set_xlabel(f"layer of {model_a}")
        axes.set_ylabel(f"layer of {model_a}")
        heading = title or f"CKA between layers of {model_a}"
    else:
        axes.set_xlabel(f"layer of {result.model_b}")
        axes.set_ylabel(f"layer of {model_a}")
        heading = title or f"CKA between {model_a} and {result.model_b}"
    details = f"{result.estimator}; unit: {result.unit_label}; {result.num_images} images"
    if result.notes:
        details += f"; {len(result.notes)} note(s) in the result (grey cells have no value)"
    axes.set_title(heading + "\n" + textwrap.fill(details, width=int(11 * side)), fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="CKA")
    figure.tight_layout()
    return save_png(figure, path)


def _label_ticks(set_ticks, set_labels, names: list[str], rotation: int) -> None:
    step = max(1, math.ceil(len(names) / MAX_LABELS))
    positions = list(range(0, len(names), step))
    set_ticks(positions)
    set_labels([names[p] for p in positions], rotation=rotation, fontsize=7)


def _hatched_cell(x: int, y: int):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="xx", edgecolor="#8c8c8c", linewidth=0)
