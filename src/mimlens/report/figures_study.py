"""The figures of a study that span several runs, drawn in its folder's ``figures/`` and shown next to the findings
they back: fine-tuning results of every model per task (F6), the supervised layer-drop sweeps (F4), the models'
frozen probes by block (F4-probe, F6-probe) and the training bars.

Models are named by their folder name (``OUT/finetune/<task>_<name>``, ``OUT/probe/<name>``); ``labels`` and
``colours`` map those names to what the figures print and draw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mimlens.io import read_json
from mimlens.report.style import save_png

#: The figures behind each finding's verdict, relative to the study folder (those that exist are shown).
FINDING_FIGURES = {
    "F1": ["compare/figures/attention_distance.png"],
    "F2": ["masking/figures/f2_transfer.png", "masking/figures/f2_attention.png", "masks/figures/avgdist.png"],
    "F3": ["compare/figures/head_kl.png"],
    "F4": [f"figures/layer_drop_{t}.png" for t in ("cls", "depth", "pose", "track", "det")],
    "F5": ["analysis/{mim}/figures/cka_within.png", "analysis/{supervised}/figures/cka_within.png"],
    "F6": ["figures/transfer.png"],
    "F4-probe": ["figures/probe_by_layer.png"],
    "F6-probe": ["figures/probe_by_layer.png"],
}

HINT = "rerun the stage that writes it"


def task_metrics(out: Path, task: str, model: str) -> dict[str, Any]:
    """``metrics.json`` of a fine-tuning; a sweep's full model (K = 0) stands for the sweep."""
    run = out / "finetune" / f"{task}_{model}"
    path = run / "drop_0" / "metrics.json" if (run / "drop_sweep.json").is_file() else run / "metrics.json"
    return read_json(path, HINT)


def transfer_figure(out: Path, path: Path, models: Sequence[str], tasks: Sequence[str],
                    labels: Mapping[str, str], colours: Mapping[str, str]) -> Path:
    """One panel per task: the primary metric of each model's fine-tuning (F6) with ±1 standard-error bars,
    and each trivial baseline as a labelled dashed line."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.0 * len(tasks), 3.4))
    for axes, task in zip(figure.subplots(1, len(tasks), squeeze=False)[0], tasks, strict=True):
        docs = [task_metrics(out, task, m) for m in models]
        primary = docs[0]["primary"]
        values = [d["primary"]["value"] for d in docs]
        errors = [d["primary"].get("se") or 0.0 for d in docs]
        bars = axes.bar(range(len(models)), values, yerr=errors, capsize=3, color=[colours[m] for m in models])
        axes.bar_label(bars, fmt="%.3g", fontsize=7)
        baselines = {name: b[primary["name"]] for name, b in (docs[0].get("baselines") or {}).items()}
        for (name, value), style in zip(baselines.items(), ("--", ":", "-."), strict=False):
            axes.axhline(value, color="0.3", linestyle=style, linewidth=1, label=f"{name} {value:.3g}")
        if baselines:
            axes.legend(fontsize=6, loc="upper right")
        axes.set_ylim(0, 1.3 * max([v + e for v, e in zip(values, errors, strict=True)] + list(baselines.values()))
                      or 1.0)
        axes.set_xticks(range(len(models)), [labels[m] for m in models], rotation=30, ha="right", fontsize=8)
        arrow = "higher is better" if primary["higher_is_better"] else "lower is better"
        axes.set_title(f"{task}: {primary['name']} ({arrow})", fontsize=9)
    figure.suptitle("Fine-tuning from each initialisation (F6)", fontsize=10)
    figure.tight_layout()
    return save_png(figure, path, dpi=110)


def probe_figure(out: Path, path: Path, models: Sequence[str], labels: Mapping[str, str],
                 colours: Mapping[str, str]) -> Path:
    """The models' frozen-probe curves (F4-probe, F6-probe): one panel per task, one line per model (in
    ``models`` order; the first one's trivial baselines dashed) with ±1 SE bars."""
    from mimlens.report.figures_probe import plot_probe_comparison

    docs = {labels[m]: read_json(out / "probe" / m / "probe.json", HINT) for m in models}
    return plot_probe_comparison(docs, path, {labels[m]: colours[m] for m in models},
                                 title="Frozen probes by block (F4-probe, F6-probe)")


def bars_figure(mim: Mapping[str, Any], supervised: Mapping[str, Any], path: Path, colours: Sequence[str]) -> Path:
    """SimMIM's masked L1 next to the fill baselines; supervised accuracy next to chance and the bar
    (:mod:`mimlens.demo.bars` documents); ``colours``: the MIM model's and the supervised model's."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 3.0))
    left, right = figure.subplots(1, 2)
    left.bar(["SimMIM", "nearest fill", "mean fill"], [mim["masked_l1"], mim["nearest_fill_l1"], mim["mean_fill_l1"]],
             color=[colours[0], "#999999", "#cccccc"])
    left.set_title(f"SimMIM masked L1 (lower is better): {'passed' if mim['passed'] else 'not passed'}", fontsize=9)
    right.bar(["supervised top-1"], [supervised["top1"]], color=colours[1])
    right.axhline(supervised["chance"], color="k", linestyle=":", label="chance")
    right.axhline(supervised["required"], color="k", linestyle="--", label="bar")
    right.set_ylim(0, 1)
    right.legend(fontsize=8)
    right.set_title(f"supervised accuracy: {'passed' if supervised['passed'] else 'not passed'}", fontsize=9)
    figure.tight_layout()
    return save_png(figure, path, dpi=110)


def with_figures(rows: Sequence[Mapping[str, Any]], out: Path, names: Mapping[str, str]) -> list[dict[str, Any]]:
    """The rows, each with the figures behind its verdict that exist (paths inside ``out``); ``names`` fills the
    ``{mim}`` and ``{supervised}`` model folders."""
    def existing(row: Mapping[str, Any]) -> list[str]:
        found = []
        for path in FINDING_FIGURES[row["id"]]:
            try:
                path = path.format(**names)
            except KeyError:  # the study has no model in that role
                continue
            if (out / path).is_file():
                found.append(path)
        return found

    return [{**row, "figures": existing(row)} for row in rows]
