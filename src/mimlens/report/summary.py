"""Per-layer summaries of an ``attention.json`` document, shared by the terminal table and the report.

Each layer is summarised by the mean over its heads of the attention distance (pixels), entropy (nats)
and the layer's mean head KL, next to what uniform attention over the same keys gives: the reference an
untrained, "global" layer sits on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

LAYER_COLUMNS = ("layer", "keys", "distance px", "uniform px", "entropy", "uniform ln(keys)", "head KL")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def uniform_distance(layer: dict[str, Any]) -> float | None:
    """The attention distance of uniform attention recorded for a layer, or None when not recorded."""
    value = (layer.get("uniform") or {}).get("distance_px")
    return float(value) if value is not None else None


def uniform_entropy(layer: dict[str, Any]) -> float | None:
    """ln(number of valid keys): the entropy of uniform attention (recorded value preferred)."""
    value = (layer.get("uniform") or {}).get("entropy")
    if value is not None:
        return float(value)
    keys = layer.get("num_keys")
    return math.log(keys) if keys else None


def attention_layer_rows(doc: dict[str, Any]) -> list[list[Any]]:
    """One row per layer in ``LAYER_COLUMNS`` order."""
    rows = []
    for layer in doc.get("layers", []):
        rows.append([
            layer.get("name", "?"),
            layer.get("num_keys"),
            _mean(layer.get("distance_px", [])),
            uniform_distance(layer),
            _mean(layer.get("entropy", [])),
            uniform_entropy(layer),
            layer.get("head_kl_mean"),
        ])
    return rows


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table for the terminal: numbers right-aligned with 4 significant digits."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = (v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True))
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])
