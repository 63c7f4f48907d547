"""The layer-wise probe figure: one panel per task, the task's primary metric against the 0-based block index
(dotted lines where a Swin stage begins)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from mimlens.io import save_bytes

__all__ = ["plot_probe_by_layer"]

TITLES = {"cls": "classification", "depth": "depth", "pose": "keypoints", "track": "tracking"}


def plot_probe_by_layer(doc: dict[str, Any], path: str | os.PathLike) -> Path:
    """Plot ``probe.json``'s ``tasks`` (rows with ``block``, ``stage`` and the ``primary`` metric); writes a PNG
    atomically and returns its path."""
    from matplotlib.figure import Figure

    from mimlens.report.style import use_figure_style

    use_figure_style()
    tasks = doc["tasks"]
    figure = Figure(figsize=(3.4 * len(tasks) + 0.4, 3.3))
    for axes, (name, task) in zip(figure.subplots(1, len(tasks), squeeze=False)[0], tasks.items(), strict=True):
        rows = task["rows"]
        blocks = [r["block"] for r in rows]
        axes.plot(blocks, [r[task["primary"]] for r in rows], marker="o")
        for before, after in zip(rows, rows[1:], strict=False):
            if after["stage"] != before["stage"]:
                axes.axvline(after["block"] - 0.5, color="grey", linestyle=":", linewidth=1)
        better = "higher" if task["higher_is_better"] else "lower"
        axes.set_title(TITLES.get(name, name), fontsize=10)
        axes.set_xlabel("block")
        axes.set_ylabel(f"{task['primary']} ({better} is better)")
        axes.set_xticks(blocks)
        axes.grid(True, alpha=0.3)
    figure.suptitle(f"frozen probes by block, {doc.get('model', 'model')}", fontsize=11)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return save_bytes(buffer.getvalue(), Path(path))
