"""The paper's Figure 5: a downstream metric against the number of last blocks dropped before fine-tuning.

One line per sweep (e.g. one per pre-training: supervised, SimMIM), markers at the swept K with ±1 standard
error bars (``se`` of the rows), the first sweep's trivial baselines as labelled dashed lines; the title names
the task and the y label the metric and whether higher or lower is better.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def layer_drop_figure(sweeps: Mapping[str, Any] | Sequence[Mapping[str, Any]], path: str | os.PathLike,
                      labels: Sequence[str] | None = None) -> Path:
    """Plot ``drop_sweep.json`` dicts (one or several of the same task and metric); write a PNG to ``path``."""
    from matplotlib.figure import Figure

    from mimlens.report.style import save_png, use_figure_style

    use_figure_style()
    sweeps = [sweeps] if isinstance(sweeps, Mapping) else list(sweeps)
    labels = list(labels) if labels is not None else [str(s.get("init", "")) for s in sweeps]
    metric, task = sweeps[0]["metric"], sweeps[0]["task"]
    figure = Figure(figsize=(5.2, 3.6))
    axes = figure.add_subplot()
    for sweep, label in zip(sweeps, labels, strict=True):
        rows = sorted(sweep["rows"], key=lambda r: r["drop_last"])
        axes.errorbar([r["drop_last"] for r in rows], [r[metric] for r in rows],
                      yerr=[r.get("se") or 0.0 for r in rows], marker="o", capsize=3, label=label)
    baselines = {name: b[metric] for name, b in (sweeps[0].get("baselines") or {}).items()}
    for (name, value), style in zip(baselines.items(), ("--", ":", "-."), strict=False):
        axes.axhline(value, color="0.3", linestyle=style, linewidth=1, label=f"{name} {value:.3g}")
    ks = sorted({r["drop_last"] for s in sweeps for r in s["rows"]})
    axes.set_xticks(ks)
    axes.set_xlabel("number of last blocks dropped")
    better = "higher is better" if sweeps[0].get("higher_is_better", True) else "lower is better"
    axes.set_ylabel(f"{metric} ({better})")
    axes.set_title(f"{task}: dropping the last blocks", fontsize=10)
    axes.grid(alpha=0.3)
    if any(labels) or baselines:
        axes.legend(fontsize=8)
    figure.tight_layout()
    return save_png(figure, path)
