"""Layer-wise frozen probes: block features, per-token targets, correlation tracking and the command."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mimlens.models import build_model
from mimlens.tasks.probes.correlation_tracker import soft_argmax_centre, template_feature, track_by_correlation
from mimlens.tasks.probes.layerwise import block_maps, depth_task, layerwise_probes, model_blocks
from mimlens.tasks.tracking import TrackingMetrics, TrackingSequence

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_vit_block_maps_are_the_block_outputs_and_the_last_has_the_final_norm():
    model = build_model("vit-micro-32", seed=0).eval()
    x = torch.randn(2, 3, 32, 32)
    with block_maps(model) as maps:
        out = maps(x)
    assert [b.name for b in model_blocks(model)] == ["blocks.0", "blocks.1", "blocks.2"]
    with torch.no_grad():
        inner = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True, output_fmt="NLC", norm=False)
        final = model.forward_features(x)[:, model.num_prefix_tokens:]
    for i in (0, 1):
        torch.testing.assert_close(out[i], inner[i].reshape(2, 4, 4, -1))
    torch.testing.assert_close(out[2], final.reshape(2, 4, 4, -1))


def test_swin_block_maps_follow_the_stages():
    model = build_model("swin-tiny-64", seed=0).eval()
    with block_maps(model) as maps:
        out = maps(torch.randn(1, 3, 64, 64))
    blocks = model_blocks(model)
    assert [b.stage for b in blocks] == [0, 0, 1, 1, 2, 2, 2, 2, 2, 2]
    assert [tuple(out[b.index].shape[1:]) for b in blocks] == [(16, 16, 48)] * 2 + [(8, 8, 96)] * 2 + [(4, 4, 192)] * 6


def test_depth_target_is_the_mean_log_depth_of_each_tokens_valid_pixels():
    task = depth_task("synthetic", 32, 0, 2, 2, {})
    gt = torch.ones(4, 4)
    gt[:2, :2] = 2.0  # token (0, 0): depth 2
    gt[:2, 2:] = torch.tensor([[1.0, 4.0], [4.0, 0.0]])  # token (0, 1): log mean of 1, 4, 4; the 0 is invalid
    gt[2:, :2] = 0.0  # token (1, 0): no valid pixel
    y, keep = task.targets([{"depth": gt}], (2, 2))
    assert keep.tolist() == [[True, True, False, True]]
    expected = [math.log(2.0), (math.log(1.0) + 2 * math.log(4.0)) / 3, math.log(1.0)]
    torch.testing.assert_close(y[0, keep[0], 0], torch.tensor(expected, dtype=torch.float64))


def pixel_patches(images):
    """Block 0's "features": the raw 8x8 patches of the input (what a perfect template matcher sees)."""
    b, _, h, w = images.shape
    return {0: F.unfold(images, 8, stride=8).transpose(1, 2).reshape(b, h // 8, w // 8, -1)}


def translated_patch_sequence(steps):
    """A 16x16 object (one textured 8x8 tile, 2x2 times) moving by whole tiles over fixed noise in 128x128."""
    g = torch.Generator().manual_seed(0)
    background = torch.rand(3, 128, 128, generator=g)
    tile = torch.rand(3, 8, 8, generator=g)
    obj = tile.repeat(1, 2, 2)
    x, y = 40, 48
    frames, boxes = [], []
    for dx, dy in [(0, 0), *steps]:
        x, y = x + dx, y + dy
        frame = background.clone()
        frame[:, y:y + 16, x:x + 16] = obj
        frames.append(frame)
        boxes.append([x, y, 16, 16])
    return TrackingSequence("translated", torch.stack(frames), torch.tensor(boxes, dtype=torch.float64),
                            torch.ones(len(boxes), dtype=torch.bool))


def test_correlation_tracking_of_an_exact_template_is_perfect():
    seq = translated_patch_sequence([(8, 0), (8, 8), (0, 8), (-8, 0), (-8, -8), (16, 0), (0, -16)])
    boxes = track_by_correlation(pixel_patches, seq, [0], 64, MEAN, STD, search_factor=4.0)
    torch.testing.assert_close(boxes[0], seq.boxes, atol=1e-4, rtol=0)
    metrics = TrackingMetrics()
    metrics.update(boxes[0], seq.boxes, seq.visible)
    result = metrics.compute()
    assert result["suc"] == pytest.approx(20 / 21)  # IoU 1 passes every threshold but the last (IoU > 1)
    assert result["precision"] == 1.0


def test_template_and_soft_argmax_on_a_constructed_map():
    fmap = torch.zeros(4, 4, 2)
    fmap[..., 0] = 1.0
    fmap[1, 2] = torch.tensor([0.0, 1.0])  # the target token, centre (20, 12) px on a 32 px input
    template = template_feature(fmap, (17.0, 9.0, 6.0, 6.0), 32)
    torch.testing.assert_close(template, torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(soft_argmax_centre(fmap, template, 32, temperature=0.01),
                               torch.tensor([20.0, 12.0], dtype=torch.float64))
    # at a high temperature the soft-argmax tends to the mean token centre
    torch.testing.assert_close(soft_argmax_centre(fmap, template, 32, temperature=1e6),
                               torch.tensor([16.0, 16.0], dtype=torch.float64), atol=1e-4, rtol=0)


def test_library_function_probes_the_chosen_blocks_and_is_deterministic():
    model = build_model("vit-micro-32", seed=0)
    kwargs = dict(data="synthetic", num_train=10, num_eval=8, blocks=[2, 0], batch_size=4)
    doc = layerwise_probes(model, ["cls", "depth"], **kwargs)
    assert [b["name"] for b in doc["blocks"]] == ["blocks.0", "blocks.2"]
    for name in ("cls", "depth"):
        task = doc["tasks"][name]
        assert task["num_train_images"] == 10 and task["num_eval_images"] == 8
        assert [r["block"] for r in task["rows"]] == [0, 2]
        assert all(r["lambda"] > 0 for r in task["rows"])
    assert 0 <= doc["tasks"]["cls"]["rows"][0]["top1"] <= 1
    assert doc["tasks"]["depth"]["rows"][0]["rmse"] > 0
    assert layerwise_probes(model, ["cls", "depth"], **kwargs) == doc


def test_cls_probe_on_a_folder_whose_val_lacks_a_class_scores_a_separable_tree_perfectly(tmp_path):
    """Labels come from one class list for the tree: val's banana is train's banana, not train's apple."""
    colours = {"apple": (200, 20, 20), "banana": (230, 220, 40), "coffee": (40, 60, 200)}
    for split, classes, count in (("train", colours, 6), ("val", ("banana", "coffee"), 3)):
        for name in classes:
            for i in range(count):
                pixels = np.clip(np.array(colours[name]) + 4 * i, 0, 255).astype(np.uint8)
                path = tmp_path / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.broadcast_to(pixels, (32, 32, 3)).copy()).save(path)
    doc = layerwise_probes(build_model("vit-micro-32", seed=0), ["cls"], data=str(tmp_path), blocks=[0], batch_size=8)
    task = doc["tasks"]["cls"]
    assert task["num_train_images"] == 18 and task["num_eval_images"] == 6
    assert task["rows"][0]["top1"] == 1.0


def test_probe_command_writes_one_row_per_block_per_task_and_the_figure(tmp_path, capsys):
    from mimlens.cli import main

    out = tmp_path / "probe"
    status = main(["probe", "vit-micro-32", "--num-train", "10", "--num-eval", "16", "--batch-size", "8",
                   "--out", str(out), "--no-progress"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "layer-wise probes of vit-micro-32 (random init)" in printed and "rmse" in printed
    doc = json.loads((out / "probe.json").read_text())
    assert list(doc["tasks"]) == ["cls", "depth", "pose", "track"]
    for name, task in doc["tasks"].items():
        assert [r["name"] for r in task["rows"]] == ["blocks.0", "blocks.1", "blocks.2"], name
        assert task["variant"] and task["primary"] in task["rows"][0]
        assert (task["rows"][0]["lambda"] is None) == (name == "track")
    assert doc["tasks"]["track"]["num_sequences"] == 1 and doc["tasks"]["track"]["num_eval_images"] == 16
    assert doc["tasks"]["pose"]["num_train_images"] == 10
    assert (out / "figures" / "probe_by_layer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "num_train: 10" in (out / "config.yaml").read_text()


@pytest.mark.parametrize(("flags", "words"), [
    (["--task", "cls,segment"], "expected one or more of cls, depth, pose, track"),
    (["--blocks", "0,7"], "blocks [7]: the model has blocks 0..2"),
    (["--blocks", "first"], "--blocks expects a comma-separated list"),
    (["--task", "cls", "--num-train", "1"], "1 training items; expected at least 2"),
])
def test_probe_command_errors_name_the_value(tmp_path, capsys, flags, words):
    from mimlens.cli import main

    assert main(["probe", "vit-micro-32", "--num-eval", "4", "--out", str(tmp_path / "x"), *flags]) == 2
    assert words in capsys.readouterr().err


def test_rows_and_baselines_keep_per_item_values_whose_statistic_is_the_metric(tmp_path, capsys):
    from mimlens.cli import main
    from mimlens.tasks.pose import keypoint_ap

    config = tmp_path / "probe.yaml"
    config.write_text("probe:\n  synthetic: {num_objects: [1, 1], background_strength: 0.0}\n")
    out = tmp_path / "probe"
    status = main(["probe", "vit-micro-32", "--num-train", "10", "--num-eval", "16", "--batch-size", "8",
                   "--blocks", "0,2", "--config", str(config), "--out", str(out), "--no-progress"])
    assert status == 0
    doc = json.loads((out / "probe.json").read_text())
    assert doc["synthetic"] == {"num_objects": [1, 1], "background_strength": 0.0}
    baselines = {"cls": "majority class", "depth": "mean depth map", "pose": "mean keypoint template",
                 "track": "zero motion"}
    for name, task in doc["tasks"].items():
        items, primary = task["items"], task["primary"]
        assert list(task["baselines"]) == [baselines[name]], name
        for row in [*task["rows"], *task["baselines"].values()]:
            values = row["values"]
            assert len(values) == len(items["ids"]), name
            if items["statistic"] == "mean":
                present = [v for v in values if v is not None]
                assert np.mean(present) == pytest.approx(row[primary], abs=1e-6), name  # float32 sums
                se = np.std(present, ddof=1) / np.sqrt(len(present)) if len(present) > 1 else 0.0  # 1 sequence
                assert row["se"] == pytest.approx(se), name
            else:
                assert keypoint_ap(values) == pytest.approx(row[primary], abs=1e-9)
                assert row["se"] >= 0
    assert doc["tasks"]["cls"]["items"]["unit"] == "image" and doc["tasks"]["track"]["items"]["unit"] == "sequence"
    assert set(doc["tasks"]["cls"]["rows"][0]["values"]) <= {0.0, 1.0}
    assert len(set(doc["tasks"]["cls"]["baselines"]["majority class"]["values"])) <= 2
    assert "majority class" in capsys.readouterr().out


def test_baseline_note_says_why_when_no_block_beats_the_baseline():
    from mimlens.tasks.probes.layerwise import baseline_note

    task = {"primary": "rmse", "higher_is_better": False, "rows": [{"rmse": 0.62}, {"rmse": 0.64}],
            "baselines": {"mean depth map": {"rmse": 0.18}}}
    note = baseline_note("depth", task)
    assert note.startswith("no block beats the mean depth map (0.18): the map knows each pixel's position")
    assert baseline_note("depth", {**task, "rows": [{"rmse": 0.62}, {"rmse": 0.15}]}) is None
    top1 = {"primary": "top1", "higher_is_better": True, "rows": [{"top1": 0.2}],
            "baselines": {"majority class": {"top1": 0.25}, "other": {"top1": 0.1}}}
    assert baseline_note("cls", top1).startswith("no block beats the majority class (0.25): the probe's intercept")
    assert baseline_note("cls", {**top1, "rows": [{"top1": 0.3}]}) is None


def test_depth_probe_on_features_that_carry_only_position_matches_the_mean_depth_map():
    """Known answer: features = the token's position (one-hot) give the per-position mean log-depth, i.e. the
    mean depth map at token resolution; features unrelated to depth and position give about a constant."""
    from mimlens.models.family import BlockRef
    from mimlens.tasks.probes.layerwise import ridge_probe

    task = depth_task("synthetic", 32, 0, 48, 16, {"num_objects": [1, 2], "background_strength": 0.5})
    grid, noise = 4, torch.Generator().manual_seed(0)

    def position(images):
        return {0: torch.eye(grid * grid).view(1, grid, grid, -1).expand(images.shape[0], -1, -1, -1)}

    def unrelated(images):
        return {0: torch.randn(images.shape[0], grid, grid, 8, generator=noise)}

    prep = {"img_size": 32, "mean": MEAN, "std": STD}
    scores = {}
    for name, maps in (("position", position), ("unrelated", unrelated)):
        rows, _, baselines = ridge_probe(task, maps, [BlockRef(0, "position", 0)], prep, 32, "cpu", False)
        scores[name], mean_map = rows[0]["rmse"], baselines["mean depth map"]["rmse"]
    train = [task.train_set[i] for i in range(len(task.train_set))]
    y, keep = task.targets(train, (grid, grid))
    per_token = ((y[..., 0] * keep).sum(0) / keep.sum(0)).view(1, grid, grid, 1)  # training mean log-depth
    scorer = task.scorer()
    scorer.update(per_token.expand(len(task.eval_set), -1, -1, -1), [task.eval_set[i] for i in range(16)],
                  list(range(16)))
    assert scores["position"] == pytest.approx(scorer.compute()[0]["rmse"], rel=0.02)
    # the per-pixel map is finer than a 4x4 token grid, which costs a little: never a factor
    assert scores["position"] <= 1.25 * mean_map
    assert scores["unrelated"] > 2 * mean_map  # one constant cannot follow the ground plane
