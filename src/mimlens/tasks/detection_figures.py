"""Detection loss curves of several fine-tuning runs in one figure (the paper's observation: a supervised
backbone leads on the classification loss, a MIM backbone on the box-regression, i.e. localisation, loss).

Left panel: classification — the RoI classifier's cross-entropy (solid) and the RPN objectness loss
(dashed). Right panel: box regression — the RoI box smooth-L1 loss (solid) and the RPN box loss (dashed).
One colour per run; values are the means ``log.jsonl`` holds for each logged step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mimlens.errors import MimlensError
from mimlens.report.style import save_png

__all__ = ["PANELS", "loss_curves"]

#: (panel title, RoI head loss, RPN loss) — the columns of ``log.jsonl`` written by a detection run.
PANELS = (
    ("classification", "loss_classifier", "loss_objectness"),
    ("box regression", "loss_box_reg", "loss_rpn_box_reg"),
)


def loss_curves(run_dirs: Sequence[str | os.PathLike], out_png: str | os.PathLike,
                labels: Sequence[str] | None = None) -> Path:
    """Plot the classification and box-regression losses of detection runs; write a PNG to ``out_png``.

    Args:
        run_dirs: detection run directories (each with a ``log.jsonl``).
        labels: legend entries (default: the run directories' names).
    """
    from matplotlib.figure import Figure

    from mimlens.report.figures_training import curve_series, read_log

    run_dirs = [Path(d) for d in run_dirs]
    labels = [d.name for d in run_dirs] if labels is None else list(labels)
    if not run_dirs or len(labels) != len(run_dirs):
        raise MimlensError(f"loss_curves needs one label per run directory, got {len(run_dirs)} runs and "
                           f"{len(labels)} labels")
    curves = []
    for run in run_dirs:
        log = run / "log.jsonl"
        if not log.is_file():
            raise MimlensError(f"run directory {run} has no log.jsonl")
        series = curve_series(read_log(log))
        missing = [name for _, *names in PANELS for name in names if name not in series]
        if missing:
            raise MimlensError(f"{log} lacks the detection loss column(s) {', '.join(missing)}; is it a detection "
                               "run?")
        curves.append(series)
    figure = Figure(figsize=(10, 3.8))
    axes = figure.subplots(1, len(PANELS))
    colours = [f"C{i % 10}" for i in range(len(run_dirs))]
    for ax, (title, roi, rpn) in zip(axes, PANELS, strict=True):
        for series, label, colour in zip(curves, labels, colours, strict=True):
            ax.plot(*series[roi], color=colour, linewidth=1.5, label=f"{label}: RoI head")
            ax.plot(*series[rpn], color=colour, linewidth=1.0, linestyle="--", alpha=0.8, label=f"{label}: RPN")
        ax.set_title(f"{title} loss ({roi} solid, {rpn} dashed)", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, frameon=False)
    figure.tight_layout()
    return save_png(figure, out_png)
