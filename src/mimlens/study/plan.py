"""``mimlens study --plan``: the stages, which a rerun reuses, what each runs, and the paths the study names that
are not there — from the study file alone, in seconds (no model is loaded)."""

from __future__ import annotations

from pathlib import Path

from mimlens.study.cost import DEVICE, SOURCE, stage_cost
from mimlens.study.runner import command_line, is_done, record
from mimlens.study.spec import Study
from mimlens.study.stages import StudyStage

IN_PROCESS = {"weights": "the model's weights written as a run folder (in process)",
              "findings": "findings by role and the report (in process)"}


def missing_paths(study: Study) -> list[str]:
    """One line per file or folder the study names that does not exist (a model's source, a recipe, data)."""
    lines = []

    def check(key: str, text: str | None) -> None:
        if text and Path(text).is_absolute() and not Path(text).exists():
            lines.append(f"missing: {key}: {text}")

    for model in study.models:
        check(f"models.{model.name}.source", model.source)
    for key, section in (("analysis", study.analysis), ("probes", study.probes)):
        check(f"{key}.data", (section or {}).get("data"))
    for spec in study.finetune:
        check(f"finetune.{spec.task}.data", spec.data)
    return lines


def needed(stages: list[StudyStage], name: str) -> list[StudyStage]:
    """Stage ``name`` and every stage it needs, directly or not, in running order."""
    by_name = {s.name: s for s in stages}
    if name not in by_name:
        from mimlens.errors import MimlensError

        raise MimlensError(f"--only {name}: no such stage (stages: {', '.join(by_name)})")
    keep, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current not in keep:
            keep.add(current)
            todo += list(by_name[current].needs)
    return [s for s in stages if s.name in keep]


def plan_lines(study: Study, out: Path, stages: list[StudyStage]) -> list[str]:
    """The plan: per stage whether it is reused, the time it took when it last ran, its GPU-hour estimate from
    published throughputs (:mod:`mimlens.study.cost`) and its command; then the total still to run and the
    missing paths."""
    lines = [f"study {study.path}: {len(stages)} stages, output {out}"]
    total, unknown = 0.0, 0
    for i, stage in enumerate(stages, 1):
        earlier = record(out, stage) or {}
        cost = stage_cost(stage, study)
        if is_done(out, stage):
            state = "done, reused"
        else:
            took = earlier.get("seconds")
            state = f"to run (took {took / 60:.2g} min when it last ran)" if took is not None else \
                "to run (no measured time yet)"
            total += cost.gpu_hours or 0.0
            unknown += cost.gpu_hours is None
        estimate = "" if stage.call is not None else f"\n    {cost}"
        what = " ".join(command_line(stage)[1:]) if stage.argv else IN_PROCESS[stage.kind]
        lines.append(f"[{i}/{len(stages)}] {stage.name}: {state}{estimate}\n    {what}")
    unknown_words = f", plus {unknown} stage(s) without an estimate" if unknown else ""
    lines.append(f"still to run: ≈ {total:.3g} GPU-h on {DEVICE}{unknown_words} (throughputs: {SOURCE}; backbone "
                 "passes only, so a lower bound)")
    lines += missing_paths(study)
    return lines
