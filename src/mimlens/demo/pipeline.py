"""The demo pipeline: the paper's whole study at tiny scale, as a list of resumable stages.

Each stage runs one ``mimlens`` command in this process (or a small library call) and writes that command's
normal run directory under ``OUT``, so ``mimlens report OUT`` and reruns of any single command work:

```
OUT/pretrain/{random_init,simmim,supervised,moco}/   the same initialisation, then the three pre-trainings
OUT/bars.json                                      the training bars (bars.py)
OUT/analysis/{random_init,simmim,supervised,moco}/ mimlens analyze: attention, diagnostics, CKA (validation scenes)
OUT/compare/                                       mimlens compare of the four analyses (cross-model CKA)
OUT/masks/                                         mimlens masks --sweep (AvgDist)
OUT/probe/{random_init,simmim,supervised,moco}/    mimlens probe (layer-wise frozen probes, same items)
OUT/finetune/<task>_<model>/                       mimlens finetune (supervised depth/pose: --sweep-drop)
OUT/findings.json, OUT/figures/, OUT/report.html   verdicts, summary figures, the report
OUT/stages/<stage>.json                            what each stage ran with (its key) and how long it took
```

A stage is done when its outputs exist and its recorded key (the configuration it ran with, and the keys
of the stages it reads) equals the current one; a stage whose key changed is redone from scratch. An
interrupted pre-training with an unchanged key resumes from its checkpoint.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mimlens.demo import findings_stage, masking
from mimlens.demo.presets import Preset, expected_minutes
from mimlens.demo.stages import MARKER, Stage, demo_stages
from mimlens.errors import MimlensError
from mimlens.study.runner import still_to_run
from mimlens.study.schedule import Clock, ready_stages, schedule_minutes


def build_stages(preset: Preset, out: Path, device: str | None = None) -> list[Stage]:
    """Every stage of the preset in running order: a demo's (:mod:`mimlens.demo.stages`) or a masking study's
    (:mod:`mimlens.demo.masking`)."""
    build = masking.build_stages if preset.mask_settings else demo_stages
    return build(preset, out, device)



def _record(out: Path, stage: Stage) -> dict[str, Any] | None:
    path = out / "stages" / f"{stage.name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def is_done(out: Path, stage: Stage) -> bool:
    record = _record(out, stage)
    return (record is not None and record.get("finished") is True and record.get("key") == _plain(stage.key)
            and all((stage.out / name).is_file() for name in stage.outputs))


def _plain(obj: Any) -> Any:
    """``obj`` as JSON gives it back (tuples become lists), so recorded and current keys compare equal."""
    return json.loads(json.dumps(obj))


def run_stage(out: Path, stage: Stage) -> float:
    """Run one stage (clearing stale outputs first) and record it; returns the seconds it took."""
    from mimlens.io import save_json

    record = _record(out, stage)
    same_key = record is not None and record.get("key") == _plain(stage.key)
    if stage.out != out and stage.out.exists() and not (stage.resumable and same_key):
        shutil.rmtree(stage.out)
    path = out / "stages" / f"{stage.name}.json"
    started_at = time.time()
    save_json({"key": stage.key, "finished": False, "started_at": started_at}, path)
    start, cpu = time.perf_counter(), time.process_time()
    stage.action()
    seconds = time.perf_counter() - start
    save_json({"key": stage.key, "finished": True, "seconds": round(seconds, 2),
               "cpu_seconds": round(time.process_time() - cpu, 2), "expected_minutes": stage.minutes,
               "started_at": started_at, "finished_at": time.time()}, path)
    return seconds


def prepare_out(out: Path, preset: Preset, fresh: bool) -> None:
    """Check that ``out`` is empty or a demo directory (``--fresh`` clears a demo directory)."""
    from mimlens.config import save_config
    from mimlens.rundir import check_out, run_kind

    check_out(out, "demo")
    if out.exists() and any(out.iterdir()):
        if run_kind(out) is None:
            raise MimlensError(f"{out} exists and is not a demo directory (no {out / 'config.yaml'} with a "
                               f"'{MARKER}' key): choose another --out")
        if fresh:
            shutil.rmtree(out)
    save_config({MARKER: {"preset": preset.name, "arch": preset.arch, "arch_kwargs": preset.arch_kwargs,
                          "claims_findings": preset.claims}}, out)


def run_demo(preset: Preset, out: str | Path, *, fresh: bool = False, device: str | None = None,
             parallel: int | None = None, say: Callable[[str], None] | None = None) -> Path:
    """Run (or resume) every stage, then write the findings, figures and ``report.html``; returns its path.

    ``parallel`` (default: the preset's) stages whose inputs are ready run at once, each in a worker
    process with ``preset.threads`` torch threads; 1 runs them one after another in this process.
    """
    import torch

    parallel = preset.parallel if parallel is None else parallel
    if parallel < 1:
        raise MimlensError(f"parallel must be at least 1 (stages run at once), got {parallel}")
    if parallel > 1 and preset.workers:
        raise MimlensError(f"preset {preset.name!r} loads data in {preset.workers} worker processes per run, "
                           "which a stage running in a worker process cannot start: use parallel 1")
    say = say or _say
    out = Path(out)
    prepare_out(out, preset, fresh)
    threads = torch.get_num_threads()
    if preset.threads:
        torch.set_num_threads(preset.threads)
    try:
        return _run_stages(preset, out, device, parallel, say)
    finally:
        torch.set_num_threads(threads)


def _run_stages(preset: Preset, out: Path, device: str | None, parallel: int, say: Callable[[str], None]) -> Path:
    write_findings_and_report = (masking if preset.mask_settings else findings_stage).write_findings_and_report
    stages = build_stages(preset, out, device)
    n = len(stages) + 1
    number = {stage.name: i for i, stage in enumerate(stages, 1)}
    findings = expected_minutes(preset, "findings", "")
    total = sum(s.minutes for s in stages) + findings
    wall = schedule_minutes(stages, parallel, findings)
    how = f"{parallel} at a time, {preset.threads or 'all'} torch thread(s) each" if parallel > 1 else "in turn"
    say(f"mimlens demo, preset {preset.name}: {n} stages ({how}), budget {wall:.2g} min; output {out}")
    todo = still_to_run(stages, lambda s: is_done(out, s), lambda s: f"[{number[s.name]}/{n}] {s.name}", say)
    clock = Clock(total, parallel, findings)

    def started(stage: Stage, left: list[Stage]) -> None:
        say(f"[{number[stage.name]}/{n}] {stage.name}: expected {stage.minutes:.2g} min; {clock.left(left)}")

    def finished(stage: Stage, seconds: float) -> None:
        clock.finished(stage, seconds)
        say(f"[{number[stage.name]}/{n}] {stage.name}: finished in {seconds / 60:.2f} min")

    if parallel == 1:
        for i, stage in enumerate(todo):
            started(stage, todo[i:])
            finished(stage, run_stage(out, stage))
    else:
        _run_parallel(preset, out, device, parallel, todo, started, finished)
    say(f"[{n}/{n}] findings and report")
    report = write_findings_and_report(out, preset)
    say(f"report: {report}")
    return report


def _run_parallel(preset: Preset, out: Path, device: str | None, parallel: int, todo: list[Stage],
                  started: Callable[[Stage, list[Stage]], None], finished: Callable[[Stage, float], None]) -> None:
    """Run ``todo`` in ``parallel`` worker processes, each stage once the stages it needs have finished
    (:func:`ready_stages` picks which). A failing stage stops the others (pre-trainings resume on a rerun)."""
    import multiprocessing

    waiting, running = list(todo), {}
    pool = multiprocessing.get_context("spawn").Pool(parallel, _worker_init, (preset.threads,))
    try:
        while waiting or running:
            unfinished = {s.name for s in (*waiting, *running.values())}
            for stage in ready_stages(waiting, unfinished)[: parallel - len(running)]:
                waiting.remove(stage)
                started(stage, [*running.values(), stage, *waiting])
                running[pool.apply_async(_run_in_worker, (preset, out, device, stage.name))] = stage
            if not running:
                raise MimlensError(f"stages {', '.join(s.name for s in waiting)} wait for stages that never ran")
            done = [result for result in running if result.ready()]
            if not done:
                time.sleep(0.2)
            for result in done:
                stage = running.pop(result)
                try:
                    seconds = result.get()
                except MimlensError as error:
                    raise MimlensError(f"stage {stage.name}: {error}") from None
                except Exception as error:  # a bug: keep the worker's traceback, say where it happened
                    error.add_note(f"(in demo stage {stage.name}, run in a worker process)")
                    raise
                finished(stage, seconds)
    finally:
        pool.terminate()
        pool.join()


def _worker_init(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _run_in_worker(preset: Preset, out: Path, device: str | None, name: str) -> float:
    """One stage in a worker process: the stages are rebuilt there (their actions are closures)."""
    stage = next(s for s in build_stages(preset, out, device) if s.name == name)
    return run_stage(out, stage)


def _say(text: str) -> None:
    print(text, file=sys.stdout, flush=True)
