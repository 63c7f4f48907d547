"""``mimlens study`` end to end: three checkpoints in the official release layouts (SimMIM ViT, DeiT, MoCo v3 at
test size, random weights) and small local data sets in the field's layouts (an ImageFolder tree, a BTS depth
list, COCO person keypoints; LaSOT folders are written too), every stage a child process (or with
``launch.scheduler: pool`` a worker of the pool), the depth fine-tunings under torchrun with 2 processes; then a
rerun after the runner was stopped mid-study reuses every finished stage."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from study_builders import official_checkpoints, real_layouts

from mimlens.cli import main

TINY = {"train": {"steps": 2}, "optim": {"batch_size": 4}}


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    weights = official_checkpoints(root)
    real_layouts(root)
    study = {
        "models": {"simmim": {"source": weights["simmim"].name, "arch": "simmim-vit-micro-32", "role": "mim"},
                   "deit": {"source": weights["deit"].name, "arch": "vit-micro-32", "role": "supervised"},
                   "moco": {"source": weights["moco"].name, "arch": "vit-micro-32", "role": "contrastive"}},
        "analysis": {"data": "images", "num_images": 8, "batch_size": 4, "split": "val"},
        "probes": {"tasks": ["depth"], "data": "nyu", "batch_size": 4},
        "finetune": {"depth": {"data": "nyu", "overrides": TINY, "drop_last": [0, 1], "processes": 2},
                     "pose": {"data": "coco", "overrides": TINY}},
        "launch": {"processes": 1, "device": "cpu", "threads": 1, "parallel": 2},
    }
    path = root / "paper-micro.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_plan_lists_the_stages_and_nothing_runs(study_file, tmp_path, capsys):
    out = tmp_path / "planned"
    assert main(["study", str(study_file), "--plan", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for stage in ("analyze_simmim", "compare", "probe_moco", "finetune_depth_deit", "finetune_pose_moco",
                  "findings"):
        assert f"{stage}: to run (no measured time yet)" in printed
    assert "torch.distributed.run --standalone --nproc_per_node 2 -m mimlens finetune depth" in printed
    assert "--sweep-drop 0,1" in printed and "missing:" not in printed
    assert not out.exists()


@pytest.mark.parametrize("scheduler", ["local", "pool"])
def test_the_study_runs_end_to_end_and_a_killed_rerun_reuses_finished_stages(study_file, scheduler, tmp_path):
    study = yaml.safe_load(study_file.read_text())
    study["launch"]["scheduler"] = scheduler
    launched = study_file.with_name(f"{study_file.stem}-{scheduler}.yaml")
    launched.write_text(yaml.safe_dump(study, sort_keys=False))
    out = tmp_path / "study"
    command = [sys.executable, "-m", "mimlens", "study", str(launched), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 300
    while not (out / "stages" / "compare.json").is_file():  # the analyses are done: stop it in the next stages
        assert first.poll() is None and time.time() < deadline, first.stdout.read()
        time.sleep(0.2)
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=120)
    finished = {p.stem for p in (out / "stages").glob("*.json") if json.loads(p.read_text()).get("finished")}
    assert {"analyze_simmim", "analyze_deit", "analyze_moco"} <= finished and "findings" not in finished

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for stage in finished:
        assert f"{stage}: done before, reused" in rerun.stdout
    findings = json.loads((out / "findings.json").read_text())
    for row in findings["findings"]:
        assert row["verdict"] in ("reproduced", "not reproduced", "within errors", "not judged")
        if row["verdict"] == "not judged":
            assert row["numbers"]["reason"]
    by_id = {row["id"]: row for row in findings["findings"]}
    assert by_id["F1"]["numbers"]["reason"] == "no random model in the study"
    assert by_id["F6"]["compared"] == {"mim": "simmim", "supervised": "deit"}
    assert by_id["F5"]["verdict"] in ("reproduced", "not reproduced")
    cka = json.loads((out / "analysis" / "simmim" / "cka.json").read_text())["matrix"]
    off = [v for i, row in enumerate(cka) for j, v in enumerate(row) if i != j]
    assert by_id["F5"]["numbers"]["SimMIM mean CKA between layers"] == pytest.approx(sum(off) / len(off))
    sweep = json.loads((out / "finetune" / "depth_deit" / "drop_sweep.json").read_text())
    assert [row["drop_last"] for row in sweep["rows"]] == [0, 1]
    report = (out / "report.html").read_text()
    assert "F1" in report and "not judged" in report and "About this study" in report
    choice = json.loads((out / "block_choice.json").read_text())["models"]
    assert {m: list(e["probe"]) for m, e in choice.items()} == {m: ["depth"] for m in ("simmim", "deit", "moco")}
    assert "Which block to transfer from" in report and (out / "figures" / "block_choice.png").is_file()
    pose_log, depth_log = ((out / "logs" / f"finetune_{task}_moco.log").read_text() for task in ("pose", "depth"))
    assert pose_log.startswith("$ ") and ("(in a worker of the pool)" in pose_log) == (scheduler == "pool")
    assert "torch.distributed.run --standalone --nproc_per_node 2" in depth_log.splitlines()[0]
