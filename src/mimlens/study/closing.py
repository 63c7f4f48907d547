"""The study's last stage: the training bars of the models it pre-trained, the findings judged by role from the
stages' JSON (:mod:`mimlens.findings`; F2 from a masking study in ``OUT/masking`` when one has finished there),
``findings.json`` (with a notice when the study claims no finding) and ``report.html`` — the same page as the
demo's.

Models the study did not pre-train (released checkpoints, timm weights) have no bar: they count as trained, and
the report says so. A model pre-trained with SimMIM or supervised classification gets that objective's bar
(:mod:`mimlens.demo.bars`, on ``bars.images`` validation images, ``BAR_IMAGES`` by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mimlens.study.spec import Study

BAR_IMAGES = 256
BARS = {"simmim": "simmim_bar", "supervised": "supervised_bar"}  # objective -> bar of mimlens.demo.bars


def study_bars(study: Study, out: Path) -> dict[str, Any]:
    """``{model: bar}`` of every model the study pre-trained with an objective that has a bar."""
    from mimlens.demo import bars

    found, images = {}, study.bars.get("images", BAR_IMAGES)
    for model in study.models:
        objective = (model.pretrain or {}).get("objective")
        if objective in BARS:
            found[model.name] = getattr(bars, BARS[objective])(out / "pretrain" / model.name, images)
    return found


ROLE_ORDER = ("mim", "supervised", "random", "contrastive", "other")  # the probe figure's line order


def f2_avgdist_row(study: Study, out: Path, claims: bool) -> dict[str, Any] | None:
    """F2's row from the study's AvgDist sweep (``masks``) at the masking of the first MIM model the study
    pre-trained with SimMIM (read from its run's ``config.yaml``); None without either."""
    from mimlens.config import load_yaml
    from mimlens.findings import rules
    from mimlens.io import read_json

    avgdist = out / "masks" / "avgdist.json"
    config = next((out / "pretrain" / m.name / "config.yaml" for m in study.models
                   if m.role == "mim" and (m.pretrain or {}).get("objective") == "simmim"), None)
    if study.masks is None or config is None or not avgdist.is_file() or not config.is_file():
        return None
    masking = load_yaml(config)["simmim"]
    return rules.f2_avgdist(read_json(avgdist), masking["mask_patch"], masking["mask_ratio"], claims)


def draw_figures(study: Study, out: Path, bars: dict[str, Any]) -> None:
    """The figures spanning several runs (:mod:`mimlens.report.figures_study`) whose inputs all exist: a stage
    that failed leaves its figure out, and its finding says why it is not judged. A study with probes also gets
    ``block_choice.json`` and its figure (:mod:`mimlens.findings.block_choice`; a model without its probe or
    analysis is named as not available there)."""
    from mimlens.findings.block_choice import write_block_choice
    from mimlens.io import read_json
    from mimlens.report.figures_attention import run_colour
    from mimlens.report.figures_study import bars_figure, probe_figure, transfer_figure
    from mimlens.tasks.figures import layer_drop_figure

    names = [m.name for m in study.models]
    labels, colours = {m.name: m.shown for m in study.models}, {n: run_colour(i) for i, n in enumerate(names)}
    figures = out / "figures"
    tasks = [s.task for s in study.finetune]
    if tasks and all(any((out / "finetune" / f"{t}_{n}" / f).is_file() for f in ("metrics.json", "drop_sweep.json"))
                     for t in tasks for n in names):
        transfer_figure(out, figures / "transfer.png", names, tasks, labels, colours)
    by_role = sorted(names, key=lambda n: ROLE_ORDER.index(study.model(n).role))
    if study.probes is not None and all((out / "probe" / n / "probe.json").is_file() for n in names):
        probe_figure(out, figures / "probe_by_layer.png", by_role, labels, colours)
    if study.probes is not None:
        write_block_choice(out, by_role, labels, colours)
    mim = next((n for n in by_role if study.model(n).role == "mim" and n in bars), None)
    supervised = next((n for n in by_role if study.model(n).role == "supervised" and n in bars), None)
    if mim and supervised:
        bars_figure(bars[mim], bars[supervised], figures / "training_bars.png", [colours[mim], colours[supervised]])
    for spec in study.finetune:
        for name in (n for n in names if study.model(n).role == "supervised"):
            sweep = out / "finetune" / f"{spec.task}_{name}" / "drop_sweep.json"
            if sweep.is_file():
                layer_drop_figure(read_json(sweep), figures / f"layer_drop_{spec.task}.png", labels=[name])


def judged_rows(study: Study, out: Path, bars: dict[str, Any]) -> list[dict[str, Any]]:
    """The findings rows by role under the current rules, from the stages' JSON under ``out`` (F2 from a masking
    study in ``OUT/masking`` when one has finished there, else from the AvgDist sweep)."""
    from mimlens.findings import judge_study, read_study
    from mimlens.findings.folder import joined_f2

    roles = {m.name: m.role for m in study.models}
    tasks = [spec.task for spec in study.finetune]
    f2 = joined_f2(out, f2_avgdist_row(study, out, study.claims_findings), study.claims_findings)
    return judge_study(roles, read_study(out, list(roles), tasks).documents, bars, study.claims_findings, tasks,
                       f2=f2)


def findings_and_report(study: Study, out: Path) -> None:
    """``bars.json``, the figures spanning runs, ``findings.json`` (the rows by role with the figures behind
    each verdict, the roles, the rules version) and ``report.html``."""
    from mimlens.findings.rules import QUICK_REASON, RULES_VERSION
    from mimlens.io import finite, save_json
    from mimlens.report.figures_study import with_figures
    from mimlens.report.html import build_report

    bars = study_bars(study, out)
    save_json(bars, out / "bars.json")
    draw_figures(study, out, bars)
    roles = {m.name: m.role for m in study.models}
    rows = judged_rows(study, out, bars)
    first = {role: next((n for n, r in roles.items() if r == role), None) for role in ("mim", "supervised")}
    rows = with_figures([finite(row) for row in rows], out, {k: v for k, v in first.items() if v})
    smoke = f"{QUICK_REASON}: a smoke run of every stage; no finding is judged."
    models = ", ".join(f"{m.shown} ({m.role})" for m in study.models)
    save_json({"study": str(study.path), "claims_findings": study.claims_findings, "rules_version": RULES_VERSION,
               "roles": roles, "bars": bars, "findings": rows, "notice": None if study.claims_findings else smoke,
               "about": {"study file": str(study.path), "models": models, **study.about}},
              out / "findings.json")
    build_report([out], out / "report.html")
