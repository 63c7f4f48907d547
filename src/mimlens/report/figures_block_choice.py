"""The "which block to transfer from" figure of ``block_choice.json`` (:mod:`mimlens.findings.block_choice`): one
row per model; the first column its per-block diagnostics, each scaled to [0, 1] over the model's blocks (min to
max) so that they share an axis, then one column per task: the probe score by block with ±1 SE bars, the chosen
block starred and the blocks within errors of it shaded. Blocks on x everywhere."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mimlens.report.style import save_png, use_figure_style


def _scaled(values: list[float | None]) -> list[float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return values
    lo, hi = min(present), max(present)
    return [None if v is None else (v - lo) / (hi - lo) if hi > lo else 0.5 for v in values]


def _unavailable(axes, text: str) -> None:
    axes.text(0.5, 0.5, textwrap.fill(text, 36), ha="center", va="center", fontsize=7, transform=axes.transAxes)
    axes.set_xticks([])
    axes.set_yticks([])


def block_choice_figure(doc: Mapping[str, Any], path: str | os.PathLike, colours: Mapping[str, str]) -> Path:
    """Draw ``doc`` (``block_choice.json``) to ``path`` (PNG, atomically); ``colours``: model label -> colour."""
    from matplotlib.figure import Figure

    use_figure_style()
    models = doc["models"]
    tasks = list(dict.fromkeys(t for m in models.values() if isinstance(m["probe"], dict) for t in m["probe"]))
    figure = Figure(figsize=(2.9 * (1 + len(tasks)) + 0.4, 2.4 * len(models) + 0.6))
    grid = figure.subplots(len(models), 1 + len(tasks), squeeze=False)
    for row, (label, model) in zip(grid, models.items(), strict=True):
        diagnostics = model["diagnostics"]
        if isinstance(diagnostics, str):
            _unavailable(row[0], diagnostics)
        else:
            for quantity, values in diagnostics.items():
                scaled = _scaled(values)
                row[0].plot(range(len(scaled)), [float("nan") if v is None else v for v in scaled], marker="o",
                            markersize=2, label=quantity)
            row[0].legend(fontsize=5)
            row[0].set_xlabel("block")
            row[0].set_xticks(range(max(len(v) for v in diagnostics.values())))
        row[0].set_title(f"{label}: diagnostics (min-max scaled)", fontsize=8)
        for axes, task in zip(row[1:], tasks, strict=True):
            record = model["probe"].get(task) if isinstance(model["probe"], dict) else None
            if record is None:
                _unavailable(axes, model["probe"] if isinstance(model["probe"], str) else f"no {task} probe")
                axes.set_title(f"{label}: {task}", fontsize=8)
                continue
            _task_panel(axes, label, task, record, colours.get(label))
    figure.suptitle("Which block to transfer from: diagnostics and frozen-probe scores by block", fontsize=10)
    figure.tight_layout()
    return save_png(figure, path, dpi=110)


def _task_panel(axes, label: str, task: str, record: Mapping[str, Any], colour: str | None) -> None:
    blocks, scores = record["blocks"], [float("nan") if v is None else v for v in record["scores"]]
    axes.errorbar(blocks, scores, yerr=[v or 0.0 for v in record["se"]], marker="o", markersize=3, capsize=2,
                  color=colour)
    for block in record["within_errors"]:
        axes.axvspan(block - 0.4, block + 0.4, color="0.85", zorder=0)
    chosen = record["chosen"]
    axes.plot([chosen], [scores[blocks.index(chosen)]], marker="*", markersize=11, color="k", linestyle="none")
    share = (record.get("bootstrap") or {}).get(str(chosen))
    axes.set_title(f"{label}: {task}\nchosen block {chosen}"
                   + (f", best in {share:.0%} of resamples" if share is not None else ""), fontsize=8)
    axes.set_xlabel("block")
    axes.set_ylabel(f"{record['primary']} ({'higher' if record['higher_is_better'] else 'lower'} is better)",
                    fontsize=7)
    axes.set_xticks(blocks)
    axes.grid(True, alpha=0.3)
