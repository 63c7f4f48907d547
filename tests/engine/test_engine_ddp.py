"""A real two-process gloo run equals one process on the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_ddp_worker import run

HERE = Path(__file__).parent


def _log(run_dir):
    return [r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "lr" in r]


def test_two_processes_equal_one_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(HERE / "engine_ddp_worker.py"), str(tmp_path / "two")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es) × 1 accumulation × 4" in result.stdout

    single = run(str(tmp_path / "one"))
    two, one = _log(tmp_path / "two"), _log(tmp_path / "one")
    assert [r["step"] for r in two] == [1, 2, 3]
    for a, b in zip(two, one, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    final = torch.load(tmp_path / "two" / "final.pt", weights_only=True)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(final[name], value, rtol=1e-4, atol=1e-6, msg=name)
