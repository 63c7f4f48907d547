"""Study stages as Slurm jobs (``launch.scheduler: slurm``), submitted through submitit.

Each command stage is one job (``sbatch`` through :class:`submitit.SlurmExecutor`, submitit's files and the job's
own output under ``OUT/logs/slurm/``); the stage's command writes to ``OUT/logs/<stage>.log`` as a local stage
does, one section per run of the job. The weights and findings stages stay in the runner's process.

- **Time limit and preemption.** Jobs are submitted with ``--requeue`` and ``--signal=USR1@<signal_seconds>``:
  Slurm sends SIGUSR1 to every process of the job that long before the time limit (and ``scancel --signal=USR1``
  sends it at any time). The training finishes its step, writes its checkpoint and exits with 128 + the signal;
  submitit's handler in the job calls :meth:`StageJob.checkpoint`, which waits for that, and requeues the job with
  the same command, which resumes from the stage's checkpoint (every training resumes from its own
  ``checkpoints/last.pt``). A job Slurm itself requeues (``scontrol requeue``, preemption with
  ``PreemptMode=REQUEUE``) gets SIGTERM, which the training answers the same way. ``requeues`` bounds the
  requeues after a time limit (submitit's count); a requeue after preemption does not count.
- **Several processes.** A multi-process stage runs ``torchrun`` in the job, ``processes`` per node, on
  ``nodes`` nodes: one task per node (``srun``), each running ``torchrun --nnodes N --nproc_per_node P
  --rdzv_backend c10d --rdzv_endpoint <first node>:<port>`` (the first of the job's nodes; the port is 29500 +
  the job id modulo 1000). ``torchrun`` itself ignores SIGUSR1 and SIGTERM there: Slurm signals every process of
  the job, and a second signal forwarded by ``torchrun`` would end the workers before their checkpoint.
- **Polling and stopping.** The runner polls a job as it polls a child process: the job's result file (the
  command's exit status), else ``squeue`` every few seconds (a job squeue has shown ended for a minute without a
  result was cancelled or killed: a job being requeued can show FAILED for a moment). Stopping the runner
  (Ctrl-C, SIGTERM) cancels its jobs with ``scancel`` (SIGTERM to the job: a training writes its checkpoint) and
  waits for them to leave the queue: a job left running after the runner has gone would finish with no one
  recording its stage, and the study's rerun would submit a second job writing the same folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from mimlens.errors import MimlensError
from mimlens.signals import stopped_for_resume
from mimlens.study.stages import StudyStage

ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED"}
GONE = "GONE"  # a job Slurm no longer knows (it ended long ago)
SQUEUE_EVERY = 5.0  # seconds between two squeue calls for one job
# a job submitit requeues after SIGUSR1 can show an ended state (FAILED) before Slurm queues it again: it counts as
# ended only when squeue has said so for this long
ENDED_FOR = 60.0
TORCHRUN_SIGNALS = "SIGINT,SIGHUP,SIGQUIT"  # TORCHELASTIC_SIGNALS_TO_HANDLE in a job: not SIGTERM, not SIGUSR1


def check_slurm() -> None:
    """The Slurm commands the launcher calls are on the PATH."""
    missing = [c for c in ("sbatch", "squeue", "scancel", "scontrol") if shutil.which(c) is None]
    if missing:
        raise MimlensError(f"launch.scheduler: slurm, but {', '.join(missing)} not found on the PATH (run the study "
                           "on a Slurm login node, or use launch.scheduler: local)")


def _ignore_stop_signals() -> None:
    """``torchrun``'s ``preexec_fn`` in a job: the workers answer the job's signals, ``torchrun`` waits for them."""
    for s in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


class StageJob(submitit.helpers.Checkpointable):
    """The job's callable: runs the stage's command in every task of the job (one task per node) and returns its
    exit status (task 0's is the job's result). A command stopped by a stop signal ends the task without a result:
    the job is requeued (by :meth:`checkpoint` or by Slurm) and runs this again."""

    def __init__(self, stage: StudyStage, nodes: int, env: dict[str, str], log: Path):
        self.name, self.argv, self.processes, self.nodes = stage.name, list(stage.argv), stage.processes, nodes
        self.env, self.log = env, log
        self.process: subprocess.Popen | None = None
        self.signalled: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "process": None, "signalled": None}

    def command(self) -> list[str]:
        """``python -m mimlens ARGV``, or ``torchrun`` on this node (``--standalone`` on one node, else a c10d
        rendezvous at the job's first node)."""
        if self.processes == 1:
            return [sys.executable, "-m", "mimlens", *self.argv]
        run = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(self.processes)]
        if self.nodes == 1:
            return [*run, "--standalone", "-m", "mimlens", *self.argv]
        job = submitit.JobEnvironment()
        port = 29500 + int(job.job_id.split("_")[0]) % 1000
        return [*run, "--nnodes", str(self.nodes), "--rdzv_backend", "c10d", "--rdzv_endpoint",
                f"{job.hostnames[0]}:{port}", "--rdzv_id", job.job_id, "-m", "mimlens", *self.argv]

    def __call__(self) -> int:
        job = submitit.JobEnvironment()
        signal.signal(signal.SIGTERM, self._record)  # Slurm's requeue or cancel (submitit only logs SIGTERM)
        log = self.log if job.global_rank == 0 else self.log.with_suffix(f".node{job.node}.log")
        command = self.command()
        with log.open("a") as out:
            out.write(f"$ {' '.join(command)}\n# Slurm job {job.job_id}, run {self._restarts() + 1}, node "
                      f"{job.hostname}\n")
            out.flush()
            multi = self.processes > 1
            env = {**self.env, "TORCHELASTIC_SIGNALS_TO_HANDLE": TORCHRUN_SIGNALS} if multi else self.env
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, preexec_fn=_ignore_stop_signals if multi else None)
            status = self.process.wait()
            out.write(f"# exit status {status}\n")
        if self.signalled is not None or stopped_for_resume(status):
            sys.exit(status)  # no result: this run was stopped and the job runs again, resuming
        return status

    def _record(self, signum: int, frame) -> None:
        self.signalled = signum

    @staticmethod
    def _restarts() -> int:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """submitit's answer to SIGUSR1 in task 0: the command got the signal too and writes its checkpoint;
        wait until it has ended, then the job is requeued with this same callable (the stage resumes)."""
        self.signalled = signal.SIGUSR1
        if self.process is not None and self.process.returncode is None:
            # waitid without reaping: the interrupted Popen.wait of __call__ holds Popen's lock
            os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOWAIT)
        return super().checkpoint(*args, **kwargs)


def job_state(job_id: str) -> str:
    """The job's state as ``squeue`` says it (``GONE``: Slurm no longer knows it; ``""``: squeue failed)."""
    run = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    if run.returncode != 0:
        return GONE if "Invalid job id" in run.stderr else ""
    return run.stdout.strip()


def sbatch_parameters(settings: dict[str, Any], stage: StudyStage, nodes: int, env: dict[str, str]) -> dict:
    """submitit's ``SlurmExecutor`` parameters of a stage's job from ``launch.slurm`` (see the module docstring)."""
    import shlex

    warning = f"USR1@{settings['signal_seconds']}"
    params = {"job_name": f"mimlens-{stage.name}", "time": settings["time"], "nodes": nodes, "ntasks_per_node": 1,
              "cpus_per_task": settings["cpus_per_task"], "signal_delay_s": settings["signal_seconds"],
              "setup": ["export SUBMITIT_PREEMPT_SIGNAL=USR1",  # submitit's handler in the job answers SIGUSR1
                        f"export PYTHONPATH={shlex.quote(env.get('PYTHONPATH', ''))}"],
              "additional_parameters": {**settings["sbatch"], "signal": warning, "requeue": True}}
    if settings["gpus_per_task"]:
        params["gpus_per_task"] = settings["gpus_per_task"]
    params.update({key: settings[key] for key in ("partition", "account", "qos") if key in settings})
    return params


class SlurmStage:
    """A stage's Slurm job as the runner sees it, like a child process: ``poll()`` is None while the job is queued,
    running or requeued, else the command's exit status; ``stop()`` cancels it."""

    def __init__(self, out: Path, stage: StudyStage, env: dict[str, str], settings: dict[str, Any]):
        self.stage, self.start = stage, time.perf_counter()
        self.log = out / "logs" / f"{stage.name}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")  # each run of the job appends its section
        nodes = settings["nodes"] if stage.processes > 1 else 1
        executor = submitit.SlurmExecutor(folder=out / "logs" / "slurm", max_num_timeout=settings["requeues"])
        executor.update_parameters(**sbatch_parameters(settings, stage, nodes, env))
        try:
            self.job = executor.submit(StageJob(stage, nodes, env, self.log))
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as error:
            said = [line.strip() for line in str(error).splitlines() if "error" in line.lower()] or [str(error)]
            raise MimlensError(f"launch.slurm: sbatch refused the job of stage {stage.name}: {said[-1]}") from None
        self.where = f"Slurm job {self.job.job_id}; log {self.log}"
        self._next_look, self._ended = 0.0, None

    def poll(self) -> int | None:
        if self.job.paths.result_pickle.exists():
            return self._result()
        if time.monotonic() < self._next_look:
            return None
        self._next_look = time.monotonic() + SQUEUE_EVERY
        state = job_state(self.job.job_id)
        if state not in ENDED | {GONE}:
            self._ended = None
            return None
        if self._ended is None:  # seen ended: look again (a requeue or the result file may follow)
            self._ended = time.monotonic()
        if time.monotonic() - self._ended < ENDED_FOR:
            return None
        return self._ended_without_result(state)

    def _result(self) -> int:
        try:
            return int(self.job.result())
        except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as error:
            with self.log.open("a") as log:
                log.write(f"# Slurm job {self.job.job_id} failed: {error}\n")
            return 1

    def _ended_without_result(self, state: str) -> int:
        """A job cancelled or killed: the exit status its command last reported (a stopped training's 128 +
        the signal, after its checkpoint), else 1."""
        text = self.log.read_text(errors="replace").splitlines() if self.log.is_file() else []
        reported = [line.split()[-1] for line in text if line.startswith("# exit status ")]
        with self.log.open("a") as log:
            log.write(f"# Slurm job {self.job.job_id} ended as {state} without a result\n")
        return int(reported[-1]) if reported else 1

    def stop(self) -> None:
        """``scancel`` (SIGTERM to the job: a training writes its checkpoint), then wait until it has ended."""
        if self.job.paths.result_pickle.exists():
            return
        subprocess.run(["scancel", self.job.job_id], capture_output=True)
        deadline = time.monotonic() + 120
        while job_state(self.job.job_id) not in ENDED | {GONE} and time.monotonic() < deadline:
            time.sleep(1)
