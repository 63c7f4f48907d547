"""The demo's last stage: ``findings.json`` from the runs' JSON, summary figures and ``report.html``.

``OUT/findings.json`` is ``{"preset", "claims_findings", "rules_version", "bars", "findings": [rows], "notice",
"about"}`` (``rules_version``: :data:`mimlens.findings.rules.RULES_VERSION` of the rules that judged it), each
row with the models it ``compared`` by role and the ``figures`` behind its verdict; ``mimlens report OUT``
renders it, so the demo's report and ``mimlens report OUT``'s are the same page. ``OUT/figures/`` holds the
figures that span several runs: fine-tuning results of the four models per task (F6), the supervised layer-drop
sweeps (F4), the four models' frozen probes by block (F4-probe, F6-probe) and the training bars;
``OUT/block_choice.json`` and ``OUT/figures/block_choice.png`` say which block to transfer from
(:mod:`mimlens.findings.block_choice`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mimlens.demo.presets import MODELS, TASKS, Preset, sweeps
from mimlens.findings import judge_study, read_study
from mimlens.findings import rules as fd
from mimlens.findings.block_choice import write_block_choice
from mimlens.findings.folder import joined_f2
from mimlens.io import finite
from mimlens.io import read_json as read_document
from mimlens.report.figures_attention import run_colour
from mimlens.report.figures_study import bars_figure, probe_figure, transfer_figure, with_figures

LABELS = {"random_init": "random init", "simmim": "SimMIM", "supervised": "supervised", "moco": "MoCo v3"}
MODEL_ROLES = {"random_init": "random", "simmim": "mim", "supervised": "supervised", "moco": "contrastive"}
COLOURS = {m: run_colour(i) for i, m in enumerate(MODELS)}  # as in the comparison, which lists MODELS in order


def stage_json(path: Path) -> Any:
    """A stage's JSON document; a missing one names the stage's folder to redo."""
    return read_document(path, "rerun the demo to redo the stage that writes it")


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
    (not judged): :func:`mimlens.findings.folder.joined_f2`."""
    row = fd.f2_avgdist(stage_json(out / "masks" / "avgdist.json"), preset.mask_patch, 0.6, preset.claims)
    return joined_f2(out, row, preset.claims)


def about(preset: Preset) -> dict[str, Any]:
    """What the demo ran, as the report lists it."""
    steps = ", ".join(f"{LABELS[o]} {preset.pretrain_steps[o]}" for o in preset.objectives)
    return {"preset": preset.name, "architecture": preset.arch,
            "timm keywords": ", ".join(f"{k}={v}" for k, v in preset.arch_kwargs.items()),
            "pre-training steps": f"{steps} (batch {preset.batch_size})",
            "fine-tuning steps": preset.finetune_steps, "analysis images": preset.analysis_images,
            "findings claimed": "yes" if preset.claims else "no"}


def write_findings_and_report(out: Path, preset: Preset) -> Path:
    """``findings.json``, the figures spanning several runs, ``block_choice.json`` and ``report.html``, the page
    ``mimlens report OUT`` writes too (it reads each stage's time from ``OUT/stages/``)."""
    from mimlens.io import save_json
    from mimlens.report.html import build_report
    from mimlens.tasks.figures import layer_drop_figure

    bars = stage_json(out / "bars.json")
    figures = out / "figures"
    transfer_figure(out, figures / "transfer.png", preset.models, TASKS, LABELS, COLOURS)
    bars_figure(bars["simmim"], bars["supervised"], figures / "training_bars.png",
                [COLOURS["simmim"], COLOURS["supervised"]])
    probe_order = [m for m in ("simmim", "supervised", "random_init", "moco") if m in preset.models]
    probe_figure(out, figures / "probe_by_layer.png", probe_order, LABELS, COLOURS)
    write_block_choice(out, probe_order, LABELS, COLOURS)
    for task in TASKS:
        if sweeps(preset, task, "supervised"):
            sweep = stage_json(out / "finetune" / f"{task}_supervised" / "drop_sweep.json")
            layer_drop_figure(sweep, figures / f"layer_drop_{task}.png", labels=["supervised"])
    rows = with_figures(compute_findings(out, preset), out, {"mim": "simmim", "supervised": "supervised"})
    smoke = f"{fd.QUICK_REASON}: a smoke run of every stage; no finding is judged."
    save_json({"preset": preset.name, "claims_findings": preset.claims, "rules_version": fd.RULES_VERSION,
               "bars": bars, "findings": rows,
               "notice": None if preset.claims else smoke, "about": about(preset)}, out / "findings.json")
    return build_report([out], out / "report.html")
