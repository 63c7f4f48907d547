"""The demo's last stage: ``findings.json`` from the runs' JSON, summary figures and ``report.html``.

``OUT/findings.json`` is ``{"preset", "claims_findings", "rules_version", "bars", "findings": [rows], "notice",
"about"}`` (``rules_version``: :data:`mimlens.findings.rules.RULES_VERSION` of the rules that judged it), each
row with the models it ``compared`` by role and the ``figures`` behind its verdict; ``mimlens report OUT``
renders it, so the demo's report and ``mimlens report OUT``'s are the same page. ``OUT/figures/`` holds the
figures that span several runs: fine-tuning results of the four models per task (F6), the supervised layer-drop
sweeps (F4), the four models' frozen probes by block (F4-probe, F6-probe) and the training bars.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mimlens.demo.presets import MASKING_FOLDER as MASKING
from mimlens.demo.presets import MODELS, TASKS, Preset, sweeps
from mimlens.findings import judge_study, read_study
from mimlens.findings import rules as fd
from mimlens.io import read_json as read_document
from mimlens.report.figures_attention import run_colour
from mimlens.report.style import save_png

LABELS = {"random_init": "random init", "simmim": "SimMIM", "supervised": "supervised", "moco": "MoCo v3"}
MODEL_ROLES = {"random_init": "random", "simmim": "mim", "supervised": "supervised", "moco": "contrastive"}
COLOURS = {m: run_colour(i) for i, m in enumerate(MODELS)}  # as in the comparison, which lists MODELS in order
FIGURES = {  # the figures behind each verdict, shown next to it in the report
    "F1": ["compare/figures/attention_distance.png"],
    "F2": [f"{MASKING}/figures/f2_transfer.png", f"{MASKING}/figures/f2_attention.png", "masks/figures/avgdist.png"],
    "F3": ["compare/figures/head_kl.png"],
    "F4": [f"figures/layer_drop_{t}.png" for t in TASKS],
    "F5": ["analysis/simmim/figures/cka_within.png", "analysis/supervised/figures/cka_within.png"],
    "F6": ["figures/transfer.png"],
    "F4-probe": ["figures/probe_by_layer.png"],
    "F6-probe": ["figures/probe_by_layer.png"],
}


def stage_json(path: Path) -> Any:
    """A stage's JSON document; a missing one names the stage's folder to redo."""
    return read_document(path, "rerun the demo to redo the stage that writes it")


def task_metrics(out: Path, task: str, model: str) -> dict[str, Any]:
    """``metrics.json`` of a fine-tuning; a sweep's full model (K = 0) stands for the sweep."""
    run = out / "finetune" / f"{task}_{model}"
    return stage_json(run / "drop_0" / "metrics.json" if (run / "drop_sweep.json").is_file() else run / "metrics.json")


def compute_findings(out: Path, preset: Preset) -> list[dict[str, Any]]:
    """The findings rows of the demo's models by their roles (:data:`MODEL_ROLES`,
    :func:`mimlens.findings.judge_study`) from the JSON files under ``out``: F1–F6 (F2 from the masking study
    when ``OUT/masking`` holds one), then the frozen-probe rows F4-probe and F6-probe."""
    roles = {m: MODEL_ROLES[m] for m in preset.models}
    study = read_study(out, list(roles), TASKS)
    rows = judge_study(roles, study.documents, stage_json(out / "bars.json"), preset.claims, TASKS,
                       f2=f2_row(out, preset))
    return [finite(row) for row in rows]


def f2_row(out: Path, preset: Preset) -> dict[str, Any]:
    """F2 from the masking study in ``OUT/masking`` when it has finished under these rules, else AvgDist alone
    (not judged); a study judged under other rules is named as such, not quoted."""
    study = out / MASKING / "findings.json"
    row = fd.f2_avgdist(stage_json(out / "masks" / "avgdist.json"), preset.mask_patch, 0.6, preset.claims)
    if study.is_file():
        doc = stage_json(study)
        found = next((r for r in doc.get("findings", []) if r.get("id") == "F2"), None)
        version = doc.get("rules_version", 1)
        if found is not None and version == fd.RULES_VERSION:
            return fd.f2_from_study(found, MASKING)
        if found is not None and preset.claims:
            row["numbers"]["reason"] = (f"the masking study in {MASKING}/ was judged under rules version {version}, "
                                        f"these are version {fd.RULES_VERSION}: rerun mimlens demo --preset masking "
                                        f"--out {out / MASKING}")
    return row


def finite(obj: Any) -> Any:
    """NaN and infinities become null (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def _save_figure(figure, path: Path) -> Path:

    return save_png(figure, path, dpi=110)


def transfer_figure(out: Path, path: Path, models: Sequence[str] = MODELS) -> Path:
    """One panel per task: the primary metric of each model's fine-tuning (F6) with ±1 standard-error bars,
    and each trivial baseline as a labelled dashed line."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.0 * len(TASKS), 3.4))
    for axes, task in zip(figure.subplots(1, len(TASKS), squeeze=False)[0], TASKS, strict=True):
        docs = [task_metrics(out, task, m) for m in models]
        primary = docs[0]["primary"]
        values = [d["primary"]["value"] for d in docs]
        errors = [d["primary"].get("se") or 0.0 for d in docs]
        bars = axes.bar(range(len(models)), values, yerr=errors, capsize=3, color=[COLOURS[m] for m in models])
        axes.bar_label(bars, fmt="%.3g", fontsize=7)
        baselines = {name: b[primary["name"]] for name, b in (docs[0].get("baselines") or {}).items()}
        for (name, value), style in zip(baselines.items(), ("--", ":", "-."), strict=False):
            axes.axhline(value, color="0.3", linestyle=style, linewidth=1, label=f"{name} {value:.3g}")
        if baselines:
            axes.legend(fontsize=6, loc="upper right")
        axes.set_ylim(0, 1.3 * max([v + e for v, e in zip(values, errors, strict=True)] + list(baselines.values()))
                      or 1.0)
        axes.set_xticks(range(len(models)), [LABELS[m] for m in models], rotation=30, ha="right", fontsize=8)
        arrow = "higher is better" if primary["higher_is_better"] else "lower is better"
        axes.set_title(f"{task}: {primary['name']} ({arrow})", fontsize=9)
    figure.suptitle("Fine-tuning from each initialisation (F6)", fontsize=10)
    figure.tight_layout()
    return _save_figure(figure, path)


def probe_figure(out: Path, path: Path, models: Sequence[str] = MODELS) -> Path:
    """The models' frozen-probe curves (F4-probe, F6-probe): one panel per task, one line per model with
    ±1 SE bars, SimMIM's trivial baselines (the same items for every model) dashed."""
    from mimlens.report.figures_probe import plot_probe_comparison

    order = [m for m in ("simmim", "supervised", "random_init", "moco") if m in models]
    docs = {LABELS[m]: stage_json(out / "probe" / m / "probe.json") for m in order}
    return plot_probe_comparison(docs, path, {LABELS[m]: COLOURS[m] for m in order},
                                 title="Frozen probes by block (F4-probe, F6-probe)")


def bars_figure(bars: Mapping[str, Any], path: Path) -> Path:
    """SimMIM's masked L1 next to the fill baselines; supervised accuracy next to chance and the bar."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 3.0))
    left, right = figure.subplots(1, 2)
    sim = bars["simmim"]
    left.bar(["SimMIM", "nearest fill", "mean fill"], [sim["masked_l1"], sim["nearest_fill_l1"], sim["mean_fill_l1"]],
             color=[COLOURS["simmim"], "#999999", "#cccccc"])
    left.set_title(f"SimMIM masked L1 (lower is better): {'passed' if sim['passed'] else 'not passed'}", fontsize=9)
    sup = bars["supervised"]
    right.bar(["supervised top-1"], [sup["top1"]], color=COLOURS["supervised"])
    right.axhline(sup["chance"], color="k", linestyle=":", label="chance")
    right.axhline(sup["required"], color="k", linestyle="--", label="bar")
    right.set_ylim(0, 1)
    right.legend(fontsize=8)
    right.set_title(f"supervised accuracy: {'passed' if sup['passed'] else 'not passed'}", fontsize=9)
    figure.tight_layout()
    return _save_figure(figure, path)


def about(preset: Preset) -> dict[str, Any]:
    """What the demo ran, as the report lists it."""
    steps = ", ".join(f"{LABELS[o]} {preset.pretrain_steps[o]}" for o in preset.objectives)
    return {"preset": preset.name, "architecture": preset.arch,
            "timm keywords": ", ".join(f"{k}={v}" for k, v in preset.arch_kwargs.items()),
            "pre-training steps": f"{steps} (batch {preset.batch_size})",
            "fine-tuning steps": preset.finetune_steps, "analysis images": preset.analysis_images,
            "findings claimed": "yes" if preset.claims else "no"}


def with_figures(rows: Sequence[Mapping[str, Any]], out: Path) -> list[dict[str, Any]]:
    """The rows, each with the figures behind its verdict that exist (paths inside ``out``)."""
    return [{**row, "figures": [f for f in FIGURES[row["id"]] if (out / f).is_file()]} for row in rows]


def write_findings_and_report(out: Path, preset: Preset) -> Path:
    """``findings.json``, the figures spanning several runs and ``report.html``, the page ``mimlens report OUT``
    writes too (it reads each stage's time from ``OUT/stages/``)."""
    from mimlens.io import save_json
    from mimlens.report.html import build_report
    from mimlens.tasks.figures import layer_drop_figure

    bars = stage_json(out / "bars.json")
    transfer_figure(out, out / "figures" / "transfer.png", preset.models)
    bars_figure(bars, out / "figures" / "training_bars.png")
    probe_figure(out, out / "figures" / "probe_by_layer.png", preset.models)
    for task in TASKS:
        if sweeps(preset, task, "supervised"):
            sweep = stage_json(out / "finetune" / f"{task}_supervised" / "drop_sweep.json")
            layer_drop_figure(sweep, out / "figures" / f"layer_drop_{task}.png", labels=["supervised"])
    rows = with_figures(compute_findings(out, preset), out)
    smoke = f"{fd.QUICK_REASON}: a smoke run of every stage; no finding is judged."
    save_json({"preset": preset.name, "claims_findings": preset.claims, "rules_version": fd.RULES_VERSION,
               "bars": bars, "findings": rows,
               "notice": None if preset.claims else smoke, "about": about(preset)}, out / "findings.json")
    return build_report([out], out / "report.html")
