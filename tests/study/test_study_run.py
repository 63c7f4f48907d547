"""``mimlens study`` end to end: three checkpoints in the official release layouts (SimMIM ViT, DeiT, MoCo v3 at
test size, random weights) and small local data sets in the field's layouts (an ImageFolder tree, a BTS depth
list, COCO person keypoints; LaSOT folders are written too), every stage a child process, the depth fine-tunings
under torchrun with 2 processes; then a rerun after the runner was stopped mid-study reuses every finished
stage."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from mimlens.cli import main
from mimlens.data.export import export_coco_keypoints, export_depth_pairs, export_lasot
from mimlens.data.synthetic import SyntheticScenes, SyntheticSequences
from mimlens.models import build_model


def official_checkpoints(root: Path) -> dict[str, Path]:
    """SimMIM's pre-training checkpoint (encoder., mask token, decoder), DeiT's (model + args) and MoCo v3's
    (module.base_encoder / momentum_encoder) around tiny random backbones."""
    simmim = build_model("simmim-vit-micro-32", seed=1).state_dict()
    weights = {f"encoder.{k}": v for k, v in simmim.items()}
    weights.update({"encoder.mask_token": torch.zeros(1, 1, 48), "decoder.0.weight": torch.randn(192, 48, 1, 1),
                    "decoder.0.bias": torch.randn(192)})
    torch.save({"model": weights, "epoch": 99}, root / "simmim_pretrain__vit_micro.pth")
    torch.save({"model": build_model("vit-micro-32", seed=2).state_dict(), "epoch": 299,
                "args": argparse.Namespace(model="deit_micro_patch8")}, root / "deit_micro.pth")
    moco = {}
    for name, seed in (("base_encoder", 3), ("momentum_encoder", 4)):
        moco.update({f"module.{name}.{k}": v for k, v in build_model("vit-micro-32", seed=seed).state_dict().items()})
    torch.save({"epoch": 300, "arch": "vit_micro", "state_dict": moco}, root / "vit-micro-300ep.pth.tar")
    return {"simmim": root / "simmim_pretrain__vit_micro.pth", "deit": root / "deit_micro.pth",
            "moco": root / "vit-micro-300ep.pth.tar"}


def real_layouts(root: Path) -> None:
    """ImageFolder images (val split), BTS-style depth lists, COCO keypoints and LaSOT folders (train, val)."""
    for split, seed in (("val", 5),):
        scenes = SyntheticScenes(8, 32, seed, split=split)
        for i in range(len(scenes)):
            item = scenes[i]
            folder = root / "images" / split / f"class{int(item['label'])}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((item["image"].permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(
                folder / f"{i:03d}.png")
    for split, count in (("train", 8), ("val", 4)):
        scenes = SyntheticScenes(count, 32, 0, split=split)
        export_depth_pairs(scenes, root / "nyu" / f"pairs_{split}")
        lines = [f"pairs_{split}/rgb/{i:06d}.png pairs_{split}/depth/{i:06d}.png 518.8579" for i in range(count)]
        (root / "nyu" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        export_coco_keypoints(scenes, root / "coco", split=split)
        export_lasot(SyntheticSequences(2, 6, 32, 0, split=split), root / "lasot" / split)


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


def test_the_study_runs_end_to_end_and_a_killed_rerun_reuses_finished_stages(study_file, tmp_path):
    out = tmp_path / "study"
    command = [sys.executable, "-m", "mimlens", "study", str(study_file), "--out", str(out)]
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
    assert (out / "logs" / "finetune_pose_moco.log").read_text().startswith("$ ")
