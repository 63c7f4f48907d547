"""Fine-tuning on the one engine: N processes equal one, kill -9 and a rerun equal one uninterrupted run,
and a bad device is one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from finetune_ddp_worker import CASES, run_all, write_configs

from mimlens.cli import main

HERE = Path(__file__).parent


def _steps(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if not r.get("epoch_end")]


def _numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def _same(a, b, where):
    """Equal nested JSON, floats to rel 1e-4."""
    if isinstance(a, float) or isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}/{i}")
    else:
        assert a == b, where


@pytest.mark.slow
def test_two_processes_equal_one_process_on_every_task_family(tmp_path):
    write_configs(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(HERE / "finetune_ddp_worker.py"), str(tmp_path), str(tmp_path / "two")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es) × 1 accumulation × 4" in result.stdout
    run_all(tmp_path, tmp_path / "one")
    for task in CASES:
        one = json.loads((tmp_path / "one" / task / "metrics.json").read_text())
        two = json.loads((tmp_path / "two" / task / "metrics.json").read_text())
        assert two["train"]["processes"] == 2 and one["train"]["processes"] == 1
        assert two["variant"] == one["variant"], task
        for name, value in _numbers(one["metrics"]).items():
            assert two["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), (task, name)
        if task != "det":  # per-item values and baselines, gathered in the data set's order
            _same(*(json.loads((tmp_path / d / task / "per_item.json").read_text()) for d in ("one", "two")), task)
            _same(one["baselines"], two["baselines"], task)
        if one["train"]["steps"]:
            for a, b in zip(_steps(tmp_path / "two" / task), _steps(tmp_path / "one" / task), strict=True):
                assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), task


def test_kill_9_then_rerun_equals_an_uninterrupted_run(tmp_path):
    (tmp_path / "cfg.yaml").write_text("train: {checkpoint_every: 5}\n")
    args = ["finetune", "depth", "--init", "vit-micro-32", "--data", "synthetic:64", "--num-eval", "8",
            "--batch-size", "8", "--steps", "40", "--config", str(tmp_path / "cfg.yaml"), "--device", "cpu",
            "--no-progress"]
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "mimlens", *args, "--out", str(killed)],
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.is_file() and not (killed / "metrics.json").exists()  # killed mid-run, after a checkpoint

    assert main([*args, "--out", str(killed)]) == 0
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    resumed, whole = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("killed", "whole"))
    assert resumed["metrics"] == whole["metrics"]
    assert [(r["step"], r["loss"]) for r in _steps(killed)] == [(r["step"], r["loss"])
                                                               for r in _steps(tmp_path / "whole")]


def test_a_bad_device_is_one_line(tmp_path, capsys):
    assert main(["finetune", "depth", "--init", "vit-micro-32", "--steps", "0", "--device", "nope",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device 'nope'" in err[0]
