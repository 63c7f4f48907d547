"""Training curves from a run's ``log.jsonl`` (one JSON object per logged step, see ``engine.runlog``).

Losses share the left panel; other logged metrics (accuracies, errors) the right one. Learning rate,
throughput, timing and epoch-end summary lines are not plotted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mimlens.errors import MimlensError

NOT_PLOTTED = {"step", "epoch", "lr", "images_per_s", "time", "seconds", "epoch_end"}


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl``; a malformed line is an error naming the file and line number."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise MimlensError(f"{path}: line {number} is not JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise MimlensError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records


def curve_series(records: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """Per logged key, the (step, value) points of the step records (epoch-end lines are skipped)."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for record in records:
        if record.get("epoch_end") or "step" not in record:
            continue
        for key, value in record.items():
            if key in NOT_PLOTTED or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(record["step"])
            ys.append(float(value))
    return series


def training_curves(records: list[dict[str, Any]], title: str = ""):
    """A matplotlib figure of the logged curves, or None when no step record has a plottable value."""
    import matplotlib.pyplot as plt

    series = curve_series(records)
    if not series:
        return None
    losses = {k: v for k, v in series.items() if "loss" in k}
    others = {k: v for k, v in series.items() if k not in losses}
    panels = [(p, label) for p, label in ((losses, "loss"), (others, "value")) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.4), squeeze=False)
    for ax, (panel, label) in zip(axes[0], panels, strict=True):
        for key, (xs, ys) in panel.items():
            ax.plot(xs, ys, label=key, linewidth=1.4, marker="o" if len(xs) <= 30 else None, markersize=3)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
