"""The layer-wise probe figures: one panel per task, the task's primary metric against the 0-based block index
(dotted lines where a Swin stage begins), ±1 SE bars where rows carry ``se``, and each trivial baseline as a
labelled dashed line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mimlens.tasks.registry import TASKS

__all__ = ["plot_probe_by_layer", "plot_probe_comparison"]

BASELINE_STYLES = ("--", ":", "-.")


def plot_probe_by_layer(doc: dict[str, Any], path: str | os.PathLike) -> Path:
    """Plot ``probe.json``'s ``tasks`` (rows with ``block``, ``stage`` and the ``primary`` metric); writes a PNG
    atomically and returns its path."""
    return plot_probe_comparison({doc.get("model", "model"): doc}, path, title=f"frozen probes by block, "
                                 f"{doc.get('model', 'model')}")


def plot_probe_comparison(docs: Mapping[str, Mapping[str, Any]], path: str | os.PathLike,
                          colours: Mapping[str, str] | None = None, title: str = "frozen probes by block") -> Path:
    """One panel per task of the first document, one line per ``probe.json`` in ``docs`` (label -> document,
    drawn in ``colours[label]``); the first document's baselines as dashed lines. Writes a PNG atomically."""
    from matplotlib.figure import Figure

    from mimlens.report.style import save_png, use_figure_style

    use_figure_style()
    first = next(iter(docs.values()))
    tasks = first["tasks"]
    figure = Figure(figsize=(3.4 * len(tasks) + 0.4, 3.5))
    for axes, (name, task) in zip(figure.subplots(1, len(tasks), squeeze=False)[0], tasks.items(), strict=True):
        primary = task["primary"]
        for label, doc in docs.items():
            rows = doc["tasks"].get(name, {}).get("rows", [])
            errors = [r.get("se") or 0.0 for r in rows]
            axes.errorbar([r["block"] for r in rows], [r[primary] for r in rows], yerr=errors, marker="o",
                          markersize=3, capsize=2, label=label if len(docs) > 1 else None,
                          color=(colours or {}).get(label))
        rows = task["rows"]
        for before, after in zip(rows, rows[1:], strict=False):
            if after["stage"] != before["stage"]:
                axes.axvline(after["block"] - 0.5, color="grey", linestyle=":", linewidth=1)
        for (base, values), style in zip((task.get("baselines") or {}).items(), BASELINE_STYLES, strict=False):
            axes.axhline(values[primary], color="0.3", linestyle=style, linewidth=1,
                         label=f"{base} {values[primary]:.3g}")
        if len(docs) > 1 or task.get("baselines"):
            axes.legend(fontsize=6)
        better = "higher" if task["higher_is_better"] else "lower"
        axes.set_title(getattr(TASKS.get(name), "title", "") or name, fontsize=10)
        axes.set_xlabel("block")
        axes.set_ylabel(f"{primary} ({better} is better)")
        axes.set_xticks([r["block"] for r in rows])
        axes.grid(True, alpha=0.3)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return save_png(figure, path)
