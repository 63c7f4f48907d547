"""Heat maps of the similarity analysis: one panel per measure, block x block within one model or blocks of
model a (rows) x blocks of model b (columns).

Block 0 sits at the bottom left, as in the CKA maps. Colour scales are fixed so maps of different models compare
by eye: [0, 1] for the similarities, [0, π/2] radians for the Procrustes angle (a distance: 0 = the same up to
rotation). Cells without a value (NaN, explained in the document's notes) are grey.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mimlens.report.style import save_png

__all__ = ["LABELS", "plot_similarity"]

LABELS = {"mutual_knn": "mutual k-NN", "cknna": "CKNNA", "svcca": "SVCCA", "pwcca": "PWCCA",
          "procrustes": "Procrustes angle (rad)", "rsa": "RSA (Spearman)"}
SCALES = {"procrustes": (0.0, math.pi / 2)}


def plot_similarity(doc: Mapping[str, Any], path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw a similarity document (``SimilarityResult.to_json()``) as one heat map per measure; write a PNG."""
    import numpy as np
    from matplotlib.figure import Figure

    measures = list(doc["measures"])
    columns = min(3, len(measures))
    rows = math.ceil(len(measures) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.9 * rows + 0.6))
    model_a = doc.get("model_a") or "model a"
    model_b = doc.get("model_b")
    for index, name in enumerate(measures):
        axes = figure.add_subplot(rows, columns, index + 1)
        matrix = np.array([[np.nan if v is None else v for v in row] for row in doc["measures"][name]], dtype=float)
        low, high = SCALES.get(name, (0.0, 1.0))
        axes.set_facecolor("#d9d9d9")
        image = axes.imshow(matrix, origin="lower", vmin=low, vmax=high, aspect="auto", interpolation="nearest",
                            cmap="viridis_r" if name == "procrustes" else "viridis")
        axes.set_title(LABELS.get(name, name), fontsize=9)
        axes.set_xlabel(f"block of {model_b or model_a}", fontsize=8)
        axes.set_ylabel(f"block of {model_a}", fontsize=8)
        for set_ticks, count in ((axes.set_yticks, matrix.shape[0]), (axes.set_xticks, matrix.shape[1])):
            set_ticks(range(0, count, max(1, math.ceil(count / 12))))
        axes.tick_params(labelsize=7)
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    heading = title or (f"Similarity between blocks of {model_a}" if model_b is None
                        else f"Similarity between {model_a} and {model_b}")
    figure.suptitle(f"{heading}\n{doc.get('estimator', '')}; {doc.get('num_images')} images", fontsize=10)
    figure.tight_layout()
    return save_png(figure, path)
