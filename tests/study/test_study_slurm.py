"""``launch.scheduler: slurm``: the job's command lines and sbatch options, the runner's word for a stage stopped with a
checkpoint, and on a one-node Slurm cluster a small study in the release layouts (SimMIM, DeiT and a
random initialisation fine-tuned for depth on a BTS-style list) runs with every command stage a Slurm job; one
fine-tuning gets SIGUSR1 (``scancel --signal=USR1``, what ``--signal=USR1@N`` sends before the time limit) once it
has written a checkpoint; the job is requeued, runs a second time and resumes; the study's findings and that
fine-tuning's metrics equal those of the same study run with ``scheduler: local``."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from study_builders import official_checkpoints, real_layouts

from mimlens.cli import main
from mimlens.errors import MimlensError
from mimlens.study.runner import run_stages
from mimlens.study.session import launcher
from mimlens.study.spec import SLURM_DEFAULTS
from mimlens.study.stages import StudyStage

PREEMPTED = "finetune_depth_simmim"
# 60 steps (about 4 s on 2 idle cores) leave the signal, sent once the first checkpoint is written at step 2,
# time to reach the job before the training ends: with 20 it sometimes arrived after the last step
STEPS = {"train": {"steps": 60, "checkpoint_every": 2}, "optim": {"batch_size": 4}}


def stage(tmp_path: Path, name: str, processes: int = 1, needs: tuple[str, ...] = ()) -> StudyStage:
    return StudyStage(name, "finetune_depth", "m", tmp_path / name, ("metrics.json",), {}, ["finetune", "depth"],
                      needs=needs, processes=processes)


def test_a_multi_node_stage_runs_torchrun_on_each_node_with_a_rendezvous_at_the_first(tmp_path, monkeypatch):
    from mimlens.study.slurm import StageJob

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[017-018]")
    two_nodes = StageJob(stage(tmp_path, "a", processes=4), 2, {}, tmp_path / "a.log").command()
    assert two_nodes[1:] == ["-m", "torch.distributed.run", "--nproc_per_node", "4", "--nnodes", "2", "--rdzv_backend",
                             "c10d", "--rdzv_endpoint", "gpu017:29734", "--rdzv_id", "1234", "-m", "mimlens",
                             "finetune", "depth"]
    one_node = StageJob(stage(tmp_path, "a", processes=4), 1, {}, tmp_path / "a.log").command()
    assert one_node[1:] == ["-m", "torch.distributed.run", "--nproc_per_node", "4", "--standalone", "-m", "mimlens",
                            "finetune", "depth"]
    assert StageJob(stage(tmp_path, "a"), 1, {}, tmp_path / "a.log").command()[1:] == ["-m", "mimlens", "finetune",
                                                                                        "depth"]


def test_the_sbatch_options_ask_for_usr1_before_the_limit_and_requeue(tmp_path):
    from mimlens.study.slurm import sbatch_parameters

    settings = {**SLURM_DEFAULTS, "partition": "gpu", "gpus_per_task": 8, "signal_seconds": 300,
                "sbatch": {"mem": "64G", "signal": "USR2@90"}}
    params = sbatch_parameters(settings, stage(tmp_path, "a", processes=8), 2, {"PYTHONPATH": "/src"})
    assert params["additional_parameters"] == {"mem": "64G", "signal": "USR1@300", "requeue": True}
    assert (params["partition"], params["nodes"], params["ntasks_per_node"], params["gpus_per_task"],
            params["time"]) == ("gpu", 2, 1, 8, 60)
    assert "export SUBMITIT_PREEMPT_SIGNAL=USR1" in params["setup"] and "account" not in params


class Stopped:
    """A launched stage whose command stopped with a checkpoint (SIGTERM: 143)."""

    def __init__(self, stage):
        self.stage, self.start, self.where = stage, time.perf_counter(), "nowhere"

    def poll(self):
        return 143

    def stop(self):
        raise AssertionError("nothing left to stop")


def test_the_runner_says_a_stage_was_stopped_with_a_checkpoint_not_that_it_failed(tmp_path):
    said = []
    failed = run_stages(tmp_path, [stage(tmp_path, "a"), stage(tmp_path, "b", needs=("a",))], 1, Stopped, said.append)
    assert failed == ["a", "b"]
    assert said == ["[1/2] a: running (1 process(es); nowhere)",
                    "[1/2] a: stopped with a checkpoint (exit status 143); a rerun resumes it",
                    "[2/2] b: not run: it needs a"]


def test_scheduler_slurm_without_the_slurm_commands_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MimlensError, match=r"^launch.scheduler: slurm, but sbatch, squeue, scancel, scontrol not "):
        launcher(tmp_path, {"scheduler": "slurm", "threads": None, "slurm": SLURM_DEFAULTS})


def test_a_job_sbatch_refuses_is_one_line_naming_the_stage(tmp_path, monkeypatch):
    from mimlens.study.slurm import SlurmStage

    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(MimlensError) as caught:
        SlurmStage(tmp_path, stage(tmp_path, "a"), {}, {**SLURM_DEFAULTS, "partition": "nope"})
    assert str(caught.value) == ("launch.slurm: sbatch refused the job of stage a: sbatch: error: invalid partition "
                                 "specified: nope")


def study_file(root: Path, name: str, launch: dict) -> Path:
    weights = {"simmim": root / "simmim_pretrain__vit_micro.pth", "deit": root / "deit_micro.pth"}
    study = {
        "models": {"simmim": {"source": weights["simmim"].name, "arch": "simmim-vit-micro-32", "role": "mim"},
                   "deit": {"source": weights["deit"].name, "arch": "vit-micro-32", "role": "supervised"},
                   "random": {"source": "vit-micro-32", "seed": 0, "role": "random"}},
        "finetune": {"depth": {"data": "nyu", "overrides": STEPS}},
        "launch": {"device": "cpu", "threads": 1, "parallel": 2, **launch},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slurm_study")
    official_checkpoints(root)
    real_layouts(root)
    return root


def wait_for(condition, what: str, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert process.poll() is None, f"the study ended before {what}:\n{process.stdout.read()}"
        assert time.time() < deadline, f"no {what} after {seconds} s"
        time.sleep(0.1)


def squeue(job: str, field: str) -> str:
    return subprocess.run(["squeue", "-h", "-t", "all", "-j", job, "-o", field], capture_output=True,
                          text=True).stdout.strip()


def preempt_when_checkpointed(out: Path, process: subprocess.Popen) -> str:
    """SIGUSR1 to the stage's job once its training has a checkpoint; the requeued job waits for its begin time (the
    test cluster's credential lifetime and a second) before it starts again. Returns the job id."""
    log = out / "logs" / f"{PREEMPTED}.log"
    wait_for(lambda: (out / "finetune" / "depth_simmim" / "checkpoints" / "last.pt").is_file(), "checkpoint", process)
    job = next(line.split()[3].rstrip(",") for line in log.read_text().splitlines() if line.startswith("# Slurm job"))
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    wait_for(lambda: squeue(job, "%r") == "BeginTime", "requeued job", process)
    return job


def rows(out: Path) -> list[dict]:
    return json.loads((out / "findings.json").read_text())["findings"]


def without_times(doc):
    """A JSON document without its measured durations (``seconds``, ``eval_seconds``)."""
    if isinstance(doc, dict):
        return {k: without_times(v) for k, v in doc.items() if not k.endswith("seconds")}
    return [without_times(v) for v in doc] if isinstance(doc, list) else doc


def test_a_preempted_stage_is_requeued_resumes_and_the_findings_equal_the_local_run(slurm_cluster, inputs, tmp_path):
    local = tmp_path / "local"
    assert main(["study", str(study_file(inputs, "local", {})), "--out", str(local)]) == 0
    out = tmp_path / "slurm"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mimlens", "study", str(study_file(inputs, "slurm", {"scheduler": "slurm"})),
               "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        job = preempt_when_checkpointed(out, process)
        printed = process.communicate(timeout=300)[0]
    finally:
        process.kill()
    assert process.returncode == 0, printed
    assert f"{PREEMPTED}: running (1 process(es); Slurm job {job};" in printed
    log = (out / "logs" / f"{PREEMPTED}.log").read_text()
    assert f"# Slurm job {job}, run 1," in log and f"# Slurm job {job}, run 2," in log  # SLURM_RESTART_COUNT 0, 1
    stopped_at = int(log.split("stopped by SIGUSR1 after step ")[1].split("/")[0])
    assert f"resuming at step {stopped_at}" in log and 0 < stopped_at < 60
    assert "Restarts=1" in subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert sorted(p.name for p in (out / "logs" / "slurm").glob(f"{job}_*")) == [
        f"{job}_0_log.err", f"{job}_0_log.out", f"{job}_0_result.pkl", f"{job}_submission.sh", f"{job}_submitted.pkl"]
    assert "#SBATCH --signal=USR1@120" in (out / "logs" / "slurm" / f"{job}_submission.sh").read_text()
    metrics = [without_times(json.loads((o / "finetune" / "depth_simmim" / "metrics.json").read_text()))
               for o in (local, out)]
    assert metrics[0] == metrics[1]
    assert rows(out) == rows(local)
    assert any("depth" in key for row in rows(out) for key in row["numbers"])
