"""``mimlens finetune det``: run directory, drop-last, the drop sweep, and a tiny fine-tune on synthetic scenes
that must lift box AP above its starting point."""

import json

import pytest
import yaml
from safetensors.torch import load_file

from mimlens.cli import main
from mimlens.models import load_model
from mimlens.tasks.detection import LOSS_NAMES
from mimlens.tasks.detection_eval import BBOX_METRICS, METRIC_VARIANT

# A 3-block, 48-wide ViT on 64 px scenes of 1-2 objects; a pyramid of strides 4-32 with 32 channels.
TINY = {
    "init": "vit-micro-32",
    "model": {"kwargs": {"img_size": 64}},
    "data": {"synthetic": {"num_objects": [1, 2], "background_strength": 0.5}},
    "det": {"channels": 32, "scales": [2.0, 1.0, 0.5], "rois_per_image": 64, "proposals": 100},
    "optim": {"batch_size": 16, "base_lr": 0.04, "warmup_steps": 10},
    "train": {"log_every": 20},
}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _run(*argv):
    assert main(["finetune", "det", *[str(a) for a in argv], "--no-progress"]) == 0


def test_start_point_with_dropped_blocks_writes_a_loadable_run(tmp_path, tiny_config):
    out = tmp_path / "start"
    _run("--config", tiny_config, "--data", "synthetic:16", "--num-eval", 6, "--steps", 0, "--drop-last", 1,
         "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "det" and metrics["drop_last"] == 1 and metrics["train"]["steps"] == 0
    assert set(metrics["metrics"]) == set(BBOX_METRICS)
    assert metrics["variant"]["metric"] == METRIC_VARIANT
    assert metrics["variant"]["num_images"] == 6
    assert "strides [4, 8, 16, 32]" in metrics["variant"]["detector"]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"] == {"name": "vit-micro-32", "kwargs": {"img_size": 64, "depth": 2}}
    truth = json.loads((out / "data" / "annotations" / "instances_val.json").read_text())
    assert len(truth["images"]) == 6 and len(truth["categories"]) == 8
    detections = json.loads((out / "detections_val.json").read_text())
    assert all(set(d) == {"image_id", "category_id", "bbox", "score"} for d in detections)
    # per-image evidence, the primary metric's bootstrap SE and the trivial baseline, like the other tasks
    per_item = json.loads((out / "per_item.json").read_text())
    assert per_item["unit"] == "image" and per_item["statistics"] == {"ap": "box_ap"}
    assert per_item["ids"] == [r["image_id"] for r in per_item["per_item"]["ap"]] and len(per_item["ids"]) == 6
    assert metrics["primary"]["se"] >= 0 and metrics["primary"]["n"] == 6
    assert metrics["items"]["statistic"] == "box_ap"
    baseline = metrics["baselines"]["mean box per category"]
    assert 0 <= baseline["ap"] <= 1 and baseline["ap_se"] >= 0
    assert metrics["trained"] in (True, False) and metrics["trained_test"]["baseline"] == "mean box per category"


def test_drop_sweep_runs_for_det(tmp_path, tiny_config):
    out = tmp_path / "sweep"
    _run("--config", tiny_config, "--data", "synthetic:8", "--num-eval", 4, "--steps", 0, "--sweep-drop", "0,1",
         "--out", out)
    table = json.loads((out / "drop_sweep.json").read_text())
    assert table["task"] == "det" and table["metric"] == "ap"
    assert [r["drop_last"] for r in table["rows"]] == [0, 1]
    assert json.loads((out / "drop_1" / "metrics.json").read_text())["drop_last"] == 1


@pytest.mark.slow
def test_tiny_fine_tune_lifts_box_ap_above_the_start_point(tmp_path, tiny_config):
    common = ["--config", tiny_config, "--data", "synthetic:256", "--num-eval", 64]
    _run(*common, "--steps", 0, "--out", tmp_path / "before")
    _run(*common, "--steps", 100, "--out", tmp_path / "after")
    before = json.loads((tmp_path / "before" / "metrics.json").read_text())["metrics"]
    after_run = tmp_path / "after"
    after = json.loads((after_run / "metrics.json").read_text())["metrics"]
    assert after["ap50"] > max(0.05, 5 * before["ap50"])
    assert after["ap"] > before["ap"]

    records = [json.loads(line) for line in (after_run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "step" in r and not r.get("epoch_end")]
    assert all(name in steps[0] for name in ("loss", *LOSS_NAMES))
    assert steps[-1]["loss_objectness"] < steps[0]["loss_objectness"]
    assert (after_run / "figures" / "det_loss_curves.png").is_file()

    backbone, _ = load_model(after_run)
    saved = load_file(after_run / "backbone.safetensors")
    assert set(saved) == set(backbone.state_dict())
