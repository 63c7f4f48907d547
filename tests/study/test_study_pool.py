"""``launch.scheduler: pool``: stages run one after another in long-lived worker processes, each with its own log
and exit status; a worker that dies fails its stage and is replaced."""

import os
import signal
import time
from pathlib import Path

from mimlens.study.pool import Pool
from mimlens.study.runner import Running, child_env
from mimlens.study.stages import StudyStage


def stage(tmp_path: Path, name: str, argv=None, call=None, processes: int = 1) -> StudyStage:
    return StudyStage(name, "test", "", tmp_path / name, (), {}, argv=argv, call=call, processes=processes)


def finish(running, seconds: float = 120) -> int:
    deadline = time.time() + seconds
    while (status := running.poll()) is None:
        assert time.time() < deadline, f"stage {running.stage.name} did not finish"
        time.sleep(0.05)
    return status


def test_stages_share_a_worker_and_each_writes_its_own_log(tmp_path):
    pool = Pool(tmp_path, 1, child_env(1))
    try:
        first = pool(stage(tmp_path, "missing", argv=["report", str(tmp_path / "no-such-run")]))
        assert finish(first) == 2
        worker = first.worker
        second = pool(stage(tmp_path, "sleep", call=("time:sleep", (0.01,))))
        assert finish(second) == 0 and second.worker is worker
    finally:
        pool.close()
    log = (tmp_path / "logs" / "missing.log").read_text()
    assert log.startswith("$ ") and "(in a worker of the pool)" in log
    assert "mimlens report: error:" in log and str(tmp_path / "no-such-run") in log
    assert "error" not in (tmp_path / "logs" / "sleep.log").read_text()


def test_a_call_that_raises_a_mimlens_error_fails_with_its_line_and_a_bug_with_its_traceback(tmp_path):
    pool = Pool(tmp_path, 1, child_env(1))
    try:
        error = pool(stage(tmp_path, "error", call=("mimlens.config:load_yaml", (tmp_path / "absent.yaml",))))
        assert finish(error) == 2
        bug = pool(stage(tmp_path, "bug", call=("math:sqrt", (-1.0,))))
        assert finish(bug) == 1
    finally:
        pool.close()
    assert "mimlens study: error:" in (tmp_path / "logs" / "error.log").read_text()
    assert "Traceback" in (tmp_path / "logs" / "bug.log").read_text()
    assert "ValueError: math domain error" in (tmp_path / "logs" / "bug.log").read_text()


def test_a_killed_worker_fails_its_stage_and_the_next_stage_gets_a_new_one(tmp_path):
    pool = Pool(tmp_path, 1, child_env(1))
    try:
        slow = pool(stage(tmp_path, "slow", call=("time:sleep", (60,))))
        time.sleep(0.5)
        os.kill(slow.worker.process.pid, signal.SIGKILL)
        assert finish(slow) == -signal.SIGKILL
        after = pool(stage(tmp_path, "after", call=("time:sleep", (0.01,))))
        assert finish(after) == 0 and after.worker is not slow.worker
    finally:
        pool.close()


def test_a_stage_may_start_processes_of_its_own(tmp_path):
    pool = Pool(tmp_path, 1, child_env(1))
    try:
        assert finish(pool(stage(tmp_path, "loader", call=("study_builders:start_a_process", ())))) == 0
    finally:
        pool.close()


def test_a_torchrun_stage_gets_its_own_processes(tmp_path):
    pool = Pool(tmp_path, 1, child_env(1))
    launched = pool(stage(tmp_path, "ddp", argv=["report", str(tmp_path / "none")], processes=2))
    try:
        assert isinstance(launched, Running)
    finally:
        launched.stop()
        pool.close()
