"""Overlaid attention figures of several models (``mimlens compare``), drawn from ``attention.json`` documents.

One figure per statistic, layers on the x axis (block index, shifted a little per model so the dots do
not hide each other): small dots are heads, the line joins the layer means, and a dashed line of the
same colour is uniform attention over the same keys, the value of an untrained layer. Models of
different depth share the axis by block index.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

STATISTICS = {
    "attention_distance": ("distance_px", "averaged attention distance (px)", "distance_px"),
    "attention_entropy": ("entropy", "attention entropy (nats)", "entropy"),
    "head_kl": ("head_kl", "KL divergence between heads (nats)", None),
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

    key, ylabel, uniform_key = STATISTICS[stem]
    depth = max(len(d.get("layers", [])) for d in docs)
    figure = Figure(figsize=(max(6.0, 0.45 * depth + 3.5), 4.0))
    axes = figure.add_subplot()
    colours = [f"C{i % 10}" for i in range(len(docs))]
    width = 0.5 / max(1, len(docs))
    for m, (doc, label, colour) in enumerate(zip(docs, labels, colours, strict=True)):
        layers = doc.get("layers", [])
        offset = (m - (len(docs) - 1) / 2) * width
        xs, ys = [], []
        for i, layer in enumerate(layers):
            values = _head_values(layer, key)
            xs += [i + offset] * len(values)
            ys += values
        axes.scatter(xs, ys, s=10 if key == "head_kl" else 16, color=colour, alpha=0.55, linewidths=0)
        positions = [i + offset for i in range(len(layers))]
        axes.plot(positions, [_layer_mean(layer, key) for layer in layers], color=colour, marker="o",
                  markersize=5, linewidth=1.4, label=label)
        if uniform_key:
            uniform = [(layer.get("uniform") or {}).get(uniform_key) for layer in layers]
            axes.plot(positions, [math.nan if u is None else u for u in uniform], color=colour, linestyle="--",
                      linewidth=1.0, alpha=0.8, label=f"{label}: uniform attention")
    if key == "head_kl":
        axes.axhline(0.0, color="0.4", linestyle="--", linewidth=1.0, label="uniform attention (KL 0)")
    names = max((d.get("layers", []) for d in docs), key=len)
    axes.set_xticks(range(depth))
    axes.set_xticklabels([layer.get("name", str(i)) for i, layer in enumerate(names)], rotation=60, fontsize=7,
                         ha="right")
    axes.set_xlabel("layer")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, frameon=False, ncol=2)
    axes.set_title(f"{ylabel.split(' (')[0].capitalize()}: " + " vs ".join(labels), fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()
