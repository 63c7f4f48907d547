"""Per-layer summaries of an ``attention.json`` document, shared by the terminal table and the report.

Each layer is summarised by the mean over its heads of the attention distance (pixels), entropy (nats)
and the layer's mean head KL, next to what uniform attention over the same keys gives: the reference an
untrained, "global" layer sits on. A ``diagnostics.json`` document is summarised per block the same way: the mean
NMI over heads next to uniform attention's, the high-frequency share and the high-norm tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

LAYER_COLUMNS = ("layer", "distance px", "uniform px", "entropy", "uniform entropy", "head KL")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def uniform(layer: dict[str, Any], key: str) -> float | None:
    """A statistic of uniform attention over the layer's keys as recorded in ``attention.json``, or None."""
    value = (layer.get("uniform") or {}).get(key)
    return float(value) if value is not None else None


def attention_layer_rows(doc: dict[str, Any]) -> list[list[Any]]:
    """One row per layer in ``LAYER_COLUMNS`` order."""
    rows = []
    for layer in doc.get("layers", []):
        rows.append([
            layer.get("name", "?"),
            _mean(layer.get("distance_px", [])),
            uniform(layer, "distance_px"),
            _mean(layer.get("entropy", [])),
            uniform(layer, "entropy"),
            layer.get("head_kl_mean"),
        ])
    return rows


DIAGNOSTICS_COLUMNS = ("block", "NMI", "uniform NMI", "high-freq share", "high-norm/image", "median norm",
                       "norm threshold", "max norm", "prefix norms")


def diagnostics_rows(doc: dict[str, Any]) -> list[list[Any]]:
    """One row per block in ``DIAGNOSTICS_COLUMNS`` order."""
    rows = []
    for block in doc.get("blocks", []):
        norm = block.get("norm") or {}
        prefix = block.get("prefix_norms") or []
        rows.append([block.get("name", "?"), block.get("nmi_mean"), block.get("uniform_nmi"),
                     block.get("high_frequency_share"), block.get("high_norm_per_image"), norm.get("median"),
                     norm.get("threshold"), norm.get("max"),
                     ", ".join("-" if v is None else f"{v:.4g}" for v in prefix) or "-"])
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
