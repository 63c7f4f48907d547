"""``launch.scheduler: pool``: one-process stages run in ``launch.parallel`` long-lived worker processes, each of
which imports mimlens, torch and timm once and then runs one stage after another in its main thread (a child
process per stage spends about 5 s on those imports, which is most of a small stage). A stage under torchrun
(more than one process) still starts its own processes (:class:`mimlens.study.runner.Running`).

A worker is a spawned process in a session of its own (Ctrl-C in the terminal reaches the runner only, which
stops the stages); its output (file descriptors 1 and 2) goes to the stage's log while a stage runs. The stage's
exit status is the command's (``mimlens.cli.main``): 0, 2 for a mimlens error, 128 + the signal for a training
stopped with a checkpoint, 1 for an unexpected exception (its traceback in the log). A worker that dies (a crash
in native code, or killed) fails its stage with the worker's exit code and is replaced for the next stage.
State a command leaves in the process (torch's RNGs, the thread count) does not carry over: every command seeds
what it draws, and the worker sets its thread count again before each stage.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path

from mimlens.study.runner import Running, command_line
from mimlens.study.stages import StudyStage

STOP_WAIT = 120  # seconds a stopped stage may take to write its checkpoint before its worker is killed


def _serve(conn, threads: int | None) -> None:
    """A worker's loop: receive a stage's ``(argv, call, log)``, run it with its output in the log, send the status."""
    os.setsid()
    import torch

    from mimlens.cli import main

    while True:
        try:
            argv, call, log = conn.recv()
        except EOFError:
            return
        if threads:
            torch.set_num_threads(threads)
        conn.send(_logged(partial(main, argv) if call is None else partial(_called, call), log))


def _called(call: tuple[str, tuple]) -> int:
    """A ``call`` stage's exit status: 0, or 2 after printing a mimlens error the way the command line does."""
    from mimlens.errors import MimlensError
    from mimlens.registry import resolve

    try:
        resolve(call[0])(*call[1])
    except MimlensError as error:
        print(f"mimlens study: error: {error}", file=sys.stderr)
        return 2
    return 0


def _logged(run, log: str) -> int:
    """``run()`` with file descriptors 1 and 2 (and so ``print``, tqdm, warnings) appended to ``log``."""
    import traceback

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as file:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)
        try:
            status = run()
        except SystemExit as stop:  # argparse's usage errors
            status = stop.code if isinstance(stop.code, int) else 2
        except BaseException:  # a bug: its traceback goes to the stage's log
            traceback.print_exc()
            status = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    return status


class Worker:
    """One worker process and the stage it runs: ``poll()`` (None while it runs, else its exit status)."""

    def __init__(self, threads: int | None):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        # not daemonic, so a stage may start processes of its own (data loaders); Pool.close() ends it
        self.process = context.Process(target=_serve, args=(child, threads))
        self.process.start()
        child.close()
        self.busy = False

    def run(self, stage: StudyStage, log: Path) -> None:
        self.conn.send((stage.argv, stage.call, str(log)))
        self.busy = True

    def poll(self) -> int | None:
        """The stage's exit status once it has ended; a dead worker's exit code (negative: the signal)."""
        try:
            if self.conn.poll():
                self.busy = False
                return self.conn.recv()
        except (EOFError, OSError):  # the worker died: its end of the pipe closed
            pass
        if self.process.is_alive():
            return None
        self.busy = False
        self.process.join()
        return self.process.exitcode or 1

    def stop(self) -> None:
        """SIGTERM to the worker (a training writes its checkpoint), SIGKILL after :data:`STOP_WAIT` seconds."""
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.join(STOP_WAIT)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        self.busy = False


class Pooled:
    """A one-process stage run by a worker of the pool; the same face as :class:`~mimlens.study.runner.Running`."""

    def __init__(self, out: Path, stage: StudyStage, worker: Worker):
        self.stage, self.worker, self.start = stage, worker, time.perf_counter()
        log = out / "logs" / f"{stage.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        what = " ".join(command_line(stage)) if stage.call is None else f"{stage.call[0]}(...)"
        log.write_text(f"$ {what}  (in a worker of the pool)\n")
        self.where = f"log {log}"
        worker.run(stage, log)

    @property
    def waitables(self) -> tuple:
        """What ``multiprocessing.connection.wait`` watches: the worker's answer, and its end."""
        return self.worker.conn, self.worker.process.sentinel

    def poll(self) -> int | None:
        return self.worker.poll()

    def stop(self) -> None:
        self.worker.stop()


class Pool:
    """Workers started as stages need them; calling the pool with a stage gives it to an idle worker (a torchrun
    stage gets its own processes). The runner never runs more than ``launch.parallel`` stages at once, so there
    are at most that many workers; a dead one is replaced."""

    runs_calls = True  # the runner gives it the ``call`` stages too, so its own process never imports torch

    def __init__(self, out: Path, threads: int | None, env: dict[str, str]):
        self.out, self.threads, self.env = out, threads, env
        self.workers: list[Worker] = []

    def __call__(self, stage: StudyStage):
        if stage.processes > 1:
            return Running(self.out, stage, self.env)
        self.workers = [w for w in self.workers if w.process.is_alive() or w.busy]
        worker = next((w for w in self.workers if not w.busy), None)
        if worker is None:
            worker = Worker(self.threads)
            self.workers.append(worker)
        return Pooled(self.out, stage, worker)

    def close(self) -> None:
        for worker in self.workers:
            worker.conn.close()
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
