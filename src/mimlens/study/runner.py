"""The study runner: every stage whose key changed or that has not finished runs in a child process (``python -m
mimlens ...``, or ``torchrun`` with the study's processes per stage), with ``launch.scheduler: pool`` in a worker
process that runs one stage after another (:mod:`mimlens.study.pool`), or with ``launch.scheduler: slurm`` as a
Slurm job (:mod:`mimlens.study.slurm`), up to ``launch.parallel`` at a time, each once the stages it needs have
finished; its output goes to ``OUT/logs/<stage>.log``. A failed stage stops only the stages that need it; the
others run on, and the runner exits non-zero naming every failure. A stage whose command was stopped by a stop
signal after writing its checkpoint (exit status 128 + the signal) is reported as stopped, not failed. Stopping
the runner (Ctrl-C, SIGTERM) sends SIGTERM to the running stages — a training writes its checkpoint — and a rerun
reuses every finished stage and resumes the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mimlens.errors import MimlensError
from mimlens.io import save_json, save_text
from mimlens.signals import stopped_for_resume
from mimlens.study.schedule import Clock, ready_stages
from mimlens.study.stages import StudyStage

MARKER = "study"  # top-level key of OUT/config.yaml


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def record(out: Path, stage: StudyStage) -> dict[str, Any] | None:
    path = out / "stages" / f"{stage.name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def is_done(out: Path, stage: StudyStage) -> bool:
    """Finished with the same key, and its outputs are there (the findings are always judged again)."""
    found = record(out, stage)
    return (not stage.last and found is not None and found.get("finished") is True
            and found.get("key") == _plain(stage.key) and all((stage.out / n).is_file() for n in stage.outputs))


def command_line(stage: StudyStage) -> list[str]:
    """The child process of a command stage: ``python -m mimlens ARGV`` or its ``torchrun`` form."""
    if stage.processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(stage.processes), "-m", "mimlens", *stage.argv]
    return [sys.executable, "-m", "mimlens", *stage.argv]


def _prepare(out: Path, stage: StudyStage) -> None:
    """Clear the outputs of an earlier run with another key (the same key resumes), write the stage's config."""
    import yaml

    found = record(out, stage)
    if stage.out != out and stage.out.exists() and (found is None or found.get("key") != _plain(stage.key)):
        shutil.rmtree(stage.out)
    if stage.config is not None:
        save_text(yaml.safe_dump(stage.config, sort_keys=False), out / "stages" / f"{stage.name}.yaml")
    save_json({"key": stage.key, "finished": False, "started_at": time.time()}, out / "stages" / f"{stage.name}.json")


def _finish(out: Path, stage: StudyStage, seconds: float, status: int) -> None:
    save_json({"key": stage.key, "finished": status == 0, "status": status, "seconds": round(seconds, 2),
               "finished_at": time.time()}, out / "stages" / f"{stage.name}.json")


class Running:
    """A stage's child process and its log file: ``poll()`` (None while it runs, else its exit status), ``stop()``;
    :class:`mimlens.study.slurm.SlurmStage` is the same for a Slurm job."""

    def __init__(self, out: Path, stage: StudyStage, env: dict[str, str]):
        self.stage, self.start = stage, time.perf_counter()
        log = out / "logs" / f"{stage.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.where = f"log {log}"
        self.log = log.open("w")
        self.log.write("$ " + " ".join(command_line(stage)) + "\n")
        self.log.flush()
        self.process = subprocess.Popen(command_line(stage), stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)

    def poll(self) -> int | None:
        status = self.process.poll()
        if status is not None:
            self.log.close()
        return status

    def stop(self) -> None:
        """SIGTERM to the stage's process group (torchrun and its workers): trainings write their checkpoint."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def child_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def still_to_run(stages: list, done: Callable[[Any], bool], label: Callable[[Any], str],
                 say: Callable[[str], None]) -> list:
    """The stages not ``done``, in order; says of every other one that it is reused (the study's and the demo's
    runners)."""
    waiting = []
    for stage in stages:
        if done(stage):
            say(f"{label(stage)}: done before, reused")
        else:
            waiting.append(stage)
    return waiting


def local_launcher(out: Path, threads: int | None) -> Callable[[StudyStage], Running]:
    """Each command stage a child process of the runner (``launch.scheduler: local``)."""
    env = child_env(threads)
    return lambda stage: Running(out, stage, env)


def run_stages(out: Path, stages: list[StudyStage], parallel: int, launch: Callable[[StudyStage], Any],
               say: Callable[[str], None]) -> list[str]:
    """Run every stage not done, ``parallel`` at a time, each command stage started by ``launch`` (an object with
    ``poll()``, ``stop()``, ``stage``, ``start`` and ``where``: :func:`local_launcher`, or a Slurm job); returns the
    names of the stages that failed, were stopped or could not run because a stage they need did not finish."""
    number = {s.name: i for i, s in enumerate(stages, 1)}
    label = {s.name: f"[{number[s.name]}/{len(stages)}] {s.name}" for s in stages}
    waiting = still_to_run(stages, lambda s: is_done(out, s), lambda s: label[s.name], say)
    finished, failed, running = {s.name for s in stages if s not in waiting}, [], {}
    clock = Clock(sum(s.minutes for s in waiting), parallel) if any(s.minutes for s in waiting) else None
    try:
        while waiting or running:
            for stage in [s for s in waiting if set(s.needs) & set(failed) and not s.last]:
                waiting.remove(stage)
                failed.append(stage.name)
                say(f"{label[stage.name]}: not run: it needs {', '.join(sorted(set(stage.needs) & set(failed)))}")
            ready = [s for s in ready_stages(waiting, set()) if set(s.needs) <= finished
                     or (s.last and set(s.needs) <= finished | set(failed) and not running)]
            for stage in ready[: parallel - len(running)]:
                waiting.remove(stage)
                _prepare(out, stage)
                if stage.call is not None and not getattr(launch, "runs_calls", False):
                    _run_action(out, stage, label[stage.name], say, finished, failed)
                    continue
                running[stage.name] = launch(stage)
                expected = "" if clock is None else (
                    f"; expected {stage.minutes:.2g} min, "
                    f"{clock.left([*(c.stage for c in running.values()), *waiting])}")
                say(f"{label[stage.name]}: running ({stage.processes} process(es); {running[stage.name].where})"
                    + expected)
            if not running and waiting and not ready:
                raise MimlensError(f"stages {', '.join(s.name for s in waiting)} wait for stages that never ran")
            if running:
                _wait(list(running.values()), 0.2)
            for name, child in list(running.items()):
                status = child.poll()
                if status is None:
                    continue
                del running[name]
                seconds = time.perf_counter() - child.start
                _finish(out, child.stage, seconds, status)
                if clock is not None:
                    clock.finished(child.stage, seconds)
                if status == 0:
                    finished.add(name)
                    say(f"{label[name]}: finished in {seconds / 60:.2f} min")
                elif stopped_for_resume(status):
                    failed.append(name)
                    say(f"{label[name]}: stopped with a checkpoint (exit status {status}); a rerun resumes it")
                else:
                    failed.append(name)
                    say(f"{label[name]}: FAILED (exit status {status}); see {out / 'logs'}/{name}.log:\n"
                        + _tail(out / "logs" / f"{name}.log"))
    finally:
        for child in running.values():
            child.stop()
    return failed


def _wait(running: list, seconds: float) -> None:
    """Until one of the running stages may have ended, at most ``seconds``: a worker of the pool wakes the runner
    when it answers (``waitables``); child processes and Slurm jobs are polled."""
    from multiprocessing.connection import wait

    waitables = [w for child in running for w in getattr(child, "waitables", ())]
    if len(waitables) == 2 * len(running):
        wait(waitables, seconds)
    else:
        time.sleep(seconds)


def _run_action(out: Path, stage: StudyStage, label: str, say: Callable[[str], None], finished: set[str],
                failed: list[str]) -> None:
    start = time.perf_counter()
    try:
        stage.act()
    except MimlensError as error:
        _finish(out, stage, time.perf_counter() - start, 1)
        failed.append(stage.name)
        say(f"{label}: FAILED: {error}")
        return
    _finish(out, stage, time.perf_counter() - start, 0)
    finished.add(stage.name)
    say(f"{label}: finished in {(time.perf_counter() - start) / 60:.2f} min")


def _tail(log: Path, lines: int = 8) -> str:
    """mimlens's own error lines of a stage's log (once each), else its last ``lines`` lines."""
    text = log.read_text(errors="replace").splitlines() if log.is_file() else []
    errors = list(dict.fromkeys(line for line in text if line.startswith("mimlens ") and ": error: " in line))
    return "\n".join("    " + line for line in (errors or text[-lines:]))
