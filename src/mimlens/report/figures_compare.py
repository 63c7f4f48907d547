"""Overlaid attention figures of several models (``mimlens compare``), drawn from ``attention.json`` documents.

One figure per statistic: small dots are heads, the line joins the layer means, and a dashed line of the
same colour is uniform attention over the same keys, the value of an untrained layer. Models of equal
depth share the block index on the x axis (each model shifted a little so its dots stay visible); models
of different depth (ViT-B against Swin-B) are placed by relative depth, block i of n at (i + ½) / n.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

STATISTICS = {  # stem: (attention.json key, axis label, title, key of the uniform reference)
    "attention_distance": ("distance_px", "averaged attention distance (px)", "Attention distance", "distance_px"),
    "attention_entropy": ("entropy", "attention entropy (nats)", "Attention entropy", "entropy"),
    "head_kl": ("head_kl", "KL divergence between heads (nats)", "Head diversity", None),
}


def _head_values(layer: dict[str, Any], key: str) -> list[float]:
    """Per-head values of a layer; for head KL, every off-diagonal entry of the H x H matrix."""
    if key == "head_kl":
        matrix = layer.get("head_kl") or []
        values = [v for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j]
    else:
        values = layer.get(key) or []
    return [v for v in values if v is not None and not math.isnan(v)]


def _layer_mean(layer: dict[str, Any], key: str) -> float:
    if key == "head_kl":
        value = layer.get("head_kl_mean")
        return math.nan if value is None else value
    values = _head_values(layer, key)
    return sum(values) / len(values) if values else math.nan


def compare_figure(docs: Sequence[dict[str, Any]], labels: Sequence[str], stem: str) -> bytes:
    """PNG bytes of one overlaid figure; ``stem`` is a key of :data:`STATISTICS`."""
    from matplotlib.figure import Figure

    key, ylabel, title, uniform_key = STATISTICS[stem]
    depths = [len(d.get("layers", [])) for d in docs]
    same_depth = len(set(depths)) == 1
    figure = Figure(figsize=(max(6.0, 0.45 * max(depths) + 3.5), 4.0))
    axes = figure.add_subplot()
    width = (0.5 if same_depth else 0.5 / max(depths)) / len(docs)
    for m, (doc, label) in enumerate(zip(docs, labels, strict=True)):
        colour, layers = f"C{m % 10}", doc.get("layers", [])
        offset = (m - (len(docs) - 1) / 2) * width
        positions = [(i if same_depth else (i + 0.5) / len(layers)) + offset for i in range(len(layers))]
        xs, ys = [], []
        for x, layer in zip(positions, layers, strict=True):
            values = _head_values(layer, key)
            xs += [x] * len(values)
            ys += values
        axes.scatter(xs, ys, s=10 if key == "head_kl" else 16, color=colour, alpha=0.55, linewidths=0)
        axes.plot(positions, [_layer_mean(layer, key) for layer in layers], color=colour, marker="o",
                  markersize=5, linewidth=1.4, label=label)
        if uniform_key:
            uniform = [(layer.get("uniform") or {}).get(uniform_key) for layer in layers]
            axes.plot(positions, [math.nan if u is None else u for u in uniform], color=colour, linestyle="--",
                      linewidth=1.0, alpha=0.8, label=f"{label}: uniform attention")
    if key == "head_kl":
        axes.axhline(0.0, color="0.4", linestyle="--", linewidth=1.0, label="uniform attention (KL 0)")
    if same_depth:
        axes.set_xticks(range(depths[0]))
        axes.set_xticklabels([layer.get("name", str(i)) for i, layer in enumerate(docs[0]["layers"])], rotation=60,
                             fontsize=7, ha="right")
        axes.set_xlabel("layer")
    else:
        axes.set_xlim(0, 1)
        axes.set_xlabel("relative depth (block i of n at (i + 0.5) / n)")
    axes.ticklabel_format(axis="y", useOffset=False)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, frameon=False, ncol=2)
    axes.set_title(f"{title}: " + " vs ".join(labels), fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()
