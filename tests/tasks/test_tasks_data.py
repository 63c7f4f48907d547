import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mimlens.cli import main
from mimlens.data.synthetic import SyntheticScenes
from mimlens.errors import MimlensError
from mimlens.tasks.datasets import SYNTHETIC_OKS_SIGMA, classification_set, split_dir, synthetic_keypoints_coco
from mimlens.tasks.pose import keypoint_sigmas


def test_synthetic_coco_index_matches_the_scenes():
    scenes = SyntheticScenes(3, 32, seed=5)
    coco = synthetic_keypoints_coco(scenes)
    assert coco.getImgIds() == [0, 1, 2]
    for i in range(3):
        item = scenes[i]
        (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=[i]))
        assert ann["bbox"] == pytest.approx(item["box"].tolist())
        assert ann["area"] == int((item["segmentation"] == 1).sum())
        assert ann["keypoints"] == pytest.approx(item["keypoints"].flatten().tolist())
        assert ann["num_keypoints"] == int((item["keypoints"][:, 2] > 0).sum())
    assert keypoint_sigmas(coco).tolist() == [SYNTHETIC_OKS_SIGMA] * 5


def test_split_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    assert split_dir(tmp_path, "val") == tmp_path / "test"
    with pytest.raises(MimlensError, match="no train split"):
        split_dir(tmp_path / "test", "train")
    with pytest.raises(MimlensError, match="only for synthetic"):
        classification_set(str(tmp_path), "train", 32, 0, 1, {}, "fine_label")


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_standard_folders_through_the_command(tmp_path):
    """Depth pairs, COCO keypoints and LaSOT sequences read from disk, evaluated at the starting point."""
    run = ["--init", "vit-micro-32", "--steps", "0", "--batch-size", "4", "--no-progress"]
    depth = tmp_path / "nyu"
    for split in ("train", "val"):
        for i in range(2):
            _png(depth / split / "rgb" / f"{i}.png", _rgb(24, 40, i))
            _png(depth / split / "depth" / f"{i}.png", np.full((24, 40), 1000 + 500 * i, dtype=np.uint16))
    assert main(["finetune", "depth", "--data", str(depth), "--out", str(tmp_path / "d"), *run]) == 0
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["variant"]["num_images"] == 2

    coco = tmp_path / "coco"
    images = [{"id": 1, "file_name": "a.png", "width": 48, "height": 40}]
    keypoints = [10, 10, 2, 14, 10, 2, 18, 12, 1, 12, 20, 2, 16, 22, 0]
    annotation = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [6, 6, 16, 20], "area": 250.0, "iscrowd": 0,
                  "keypoints": keypoints, "num_keypoints": 4}
    category = {"id": 1, "name": "thing", "keypoints": ["a", "left_b", "right_b", "c", "d"], "skeleton": [],
                "sigmas": [0.1] * 5}
    for split in ("train", "val"):
        (coco / "annotations").mkdir(parents=True, exist_ok=True)
        (coco / "annotations" / f"person_keypoints_{split}.json").write_text(
            json.dumps({"images": images, "annotations": [annotation], "categories": [category]}))
        _png(coco / split / "a.png", _rgb(40, 48, 3))
    assert main(["finetune", "pose", "--data", str(coco), "--out", str(tmp_path / "p"), *run]) == 0
    variant = json.loads((tmp_path / "p" / "metrics.json").read_text())["variant"]
    assert variant["oks_sigmas"] == [0.1] * 5 and variant["num_instances"] == 1

    lasot = tmp_path / "lasot"
    for split in ("train", "test"):
        seq = lasot / split / "thing" / "thing-1"
        for t in range(3):
            _png(seq / "img" / f"{t + 1:08d}.jpg", _rgb(40, 48, t))
        (seq / "groundtruth.txt").write_text("10,10,12,10\n11,10,12,10\n12,11,12,10\n")
    assert main(["finetune", "track", "--data", str(lasot), "--out", str(tmp_path / "t"), *run]) == 0
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    # the first frame is ground truth: success at 20 of 21 thresholds in 1 of 3 frames at least
    assert metrics["variant"]["num_sequences"] == 1 and 20 / 63 - 1e-9 <= metrics["metrics"]["suc"] <= 1


COLOURS = {"apple": (200, 20, 20), "banana": (230, 220, 40), "coffee": (90, 50, 20), "durian": (40, 160, 40)}


def _class_tree(root, splits):
    """``root/<split>/<class>/<i>.png``: flat images of the class's colour, ``splits`` maps split -> classes."""
    for split, classes in splits.items():
        for name in classes:
            for i in range(2):
                _png(root / split / name / f"{i}.png", np.full((8, 8, 3), COLOURS[name], dtype=np.uint8))


@pytest.mark.parametrize("val_classes", [("banana", "coffee"), ("apple", "banana", "coffee", "durian")],
                         ids=["val-lacks-a-class", "val-has-an-extra-class"])
def test_one_class_mapping_for_every_split(tmp_path, capsys, val_classes):
    _class_tree(tmp_path, {"train": ("apple", "banana", "coffee"), "val": val_classes})
    train, val = (classification_set(str(tmp_path), split, 8, 0, 0, {}, "label") for split in ("train", "val"))
    assert train.classes == val.classes == sorted({"apple", "banana", "coffee", *val_classes})
    assert train.num_classes == val.num_classes == len(train.classes)
    for data in (train, val):  # each image's label names the folder it came from
        assert all(data.classes[label] == Path(path).parent.name for path, label in zip(data.files, data.labels,
                                                                                         strict=True))
    assert {Path(p).parent.name for p in val.files} == set(val_classes)
    untrained = "durian" in val_classes
    assert ("note: class(es) durian have no image in" in capsys.readouterr().out) == untrained


def test_a_coco_file_is_parsed_once_for_two_builds(tmp_path, monkeypatch):
    """Keypoint and instance files exported from scenes: two builds of a split share one parse (pycocotools'
    ``createIndex`` counted), their crops are held as arrays, and a rewritten file is parsed again."""
    from pycocotools.coco import COCO

    from mimlens.data.export import export_coco_instances, export_coco_keypoints
    from mimlens.tasks.datasets import pose_set
    from mimlens.tasks.detection_data import detection_set
    from mimlens.tasks.pose import CocoKeypointCrops

    scenes = SyntheticScenes(4, 32, 0, split="val")
    keypoint_file = export_coco_keypoints(scenes, tmp_path / "kp", split="val")
    export_coco_instances(scenes, tmp_path / "det", split="val", masks=False)
    indexed = []
    original = COCO.createIndex
    monkeypatch.setattr(COCO, "createIndex", lambda self: indexed.append(self) or original(self))
    first, second = (pose_set(str(tmp_path / "kp"), "val", 32, 0, 0, {})[0] for _ in range(2))
    assert first is second and len(indexed) == 1
    crops = CocoKeypointCrops(first, None, (32, 32), (8, 8), load=lambda info: scenes[info["id"]]["image"])
    assert crops.keypoints.shape == (len(crops), len(first.loadCats(1)[0]["keypoints"]), 3)
    assert crops.ann_ids.dtype == np.int64 and [a["id"] for a in crops.annotations] == crops.ann_ids.tolist()
    one, two = (detection_set(tmp_path / "det", "val") for _ in range(2))
    assert one.coco is two.coco and len(indexed) == 2 and one.image_ids.tolist() == [0, 1, 2, 3]
    keypoint_file.write_text(keypoint_file.read_text() + "\n")  # a changed file (size and mtime)
    assert pose_set(str(tmp_path / "kp"), "val", 32, 0, 0, {})[0] is not first and len(indexed) == 3
