"""One run of a study: its folder, its stages (all, or one and what it needs), the runner, and what it says."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from mimlens.errors import MimlensError
from mimlens.study.runner import MARKER, child_env, local_launcher, run_stages
from mimlens.study.schedule import schedule_minutes
from mimlens.study.spec import Study
from mimlens.study.stages import StudyStage, study_stages


def stages_of(study: Study, out: Path, only: str | None = None) -> list[StudyStage]:
    from mimlens.study.plan import needed

    stages = study_stages(study, out)
    return needed(stages, only) if only else stages


def plan_study(study: Study, out: Path, only: str | None = None) -> list[str]:
    from mimlens.study.plan import plan_lines

    return plan_lines(study, out, stages_of(study, out, only))


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def run_study(study: Study, out: Path, only: str | None = None) -> int:
    """Run (or resume) the study into ``out``; 0 when every stage finished, else a one-line error per failure."""
    from mimlens.config import save_config

    stages = stages_of(study, out, only)
    launch = study.launch
    start = launcher(out, launch)
    out.mkdir(parents=True, exist_ok=True)
    save_config({MARKER: {"file": str(study.path.resolve()), "models": {m.name: m.role for m in study.models}}},
                out)
    budget = schedule_minutes(stages, launch["parallel"])
    say(f"mimlens study {study.path}: {len(stages)} stages ({launch['parallel']} at a time, "
        f"{launch['processes']} process(es) each, {launch['device']}, {launch['scheduler']})"
        + (f", budget {budget:.2g} min" if budget else "") + f"; output {out}")
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        failed = run_stages(out, stages, launch["parallel"], start, say)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if hasattr(start, "close"):
            start.close()
    if failed:
        raise MimlensError(f"{len(failed)} stage(s) did not finish: {', '.join(failed)}; the others are kept and "
                           "a rerun reuses them")
    if (out / "report.html").is_file():
        say(f"report: {out / 'report.html'}")
    return 0


def launcher(out: Path, launch: dict):
    """What starts a command stage: a child process, a worker of the pool (``launch.scheduler: pool``), or with
    ``launch.scheduler: slurm`` a Slurm job (submitit and the Slurm commands checked here, before anything runs)."""
    if launch["scheduler"] == "pool":
        from mimlens.study.pool import Pool

        return Pool(out, launch["threads"], child_env(launch["threads"]))
    if launch["scheduler"] != "slurm":
        return local_launcher(out, launch["threads"])
    try:
        from mimlens.study.slurm import SlurmStage, check_slurm
    except ImportError as error:
        raise MimlensError(f"launch.scheduler: slurm needs submitit ({error}): pip install 'mimlens[cluster]'") \
            from None
    check_slurm()
    env = child_env(launch["threads"])
    return lambda stage: SlurmStage(out, stage, env, launch["slurm"])


def say(text: str) -> None:
    print(text, file=sys.stdout, flush=True)
