"""The study's last stage: the training bars of the models it pre-trained, the findings judged by role from the
stages' JSON (:mod:`mimlens.findings`), ``findings.json`` and ``report.html`` — the same page as the demo's.

Models the study did not pre-train (released checkpoints, timm weights) have no bar: they count as trained, and
the report says so. A model pre-trained with SimMIM or supervised classification gets that objective's bar
(:mod:`mimlens.demo.bars`, on ``BAR_IMAGES`` validation images).
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

    found = {}
    for model in study.models:
        objective = (model.pretrain or {}).get("objective")
        if objective in BARS:
            found[model.name] = getattr(bars, BARS[objective])(out / "pretrain" / model.name, BAR_IMAGES)
    return found


def findings_and_report(study: Study, out: Path) -> None:
    """``bars.json``, ``findings.json`` (the rows by role, the roles, the rules version) and ``report.html``."""
    from mimlens.findings import judge_study, read_study
    from mimlens.findings.rules import RULES_VERSION
    from mimlens.io import save_json
    from mimlens.report.html import build_report

    bars = study_bars(study, out)
    save_json(bars, out / "bars.json")
    roles = {m.name: m.role for m in study.models}
    tasks = [spec.task for spec in study.finetune]
    rows = judge_study(roles, read_study(out, list(roles), tasks).documents, bars, study.claims_findings, tasks)
    save_json({"study": str(study.path), "claims_findings": study.claims_findings, "rules_version": RULES_VERSION,
               "roles": roles, "bars": bars, "findings": rows,
               "about": {"study file": str(study.path), "models": ", ".join(f"{n} ({r})" for n, r in roles.items())}},
              out / "findings.json")
    build_report([out], out / "report.html", title=f"mimlens study {study.path.stem}")
