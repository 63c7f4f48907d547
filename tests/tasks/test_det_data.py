"""COCO instances reader, synthetic scenes as COCO instances, letterbox and the training transform."""

import json

import pytest
import torch
from PIL import Image

from mimlens.data.export import export_coco_instances
from mimlens.data.synthetic import SyntheticScenes
from mimlens.errors import MimlensError
from mimlens.tasks.detection_data import (
    CocoInstances,
    DetectionTransform,
    detection_set,
    letterbox,
    load_instances,
)

DATA = {
    "images": [{"id": 5, "file_name": "wide.png", "width": 80, "height": 40},
               {"id": 6, "file_name": "empty.png", "width": 30, "height": 30}],
    "categories": [{"id": 17, "name": "dog"}, {"id": 4, "name": "cat"}],
    "annotations": [
        {"id": 1, "image_id": 5, "category_id": 17, "bbox": [10, 5, 20, 10], "iscrowd": 0},
        {"id": 2, "image_id": 5, "category_id": 4, "bbox": [70, 30, 30, 20], "iscrowd": 0},  # crosses the border
        {"id": 3, "image_id": 5, "category_id": 4, "bbox": [0, 0, 50, 40], "iscrowd": 1},  # crowd
        {"id": 4, "image_id": 5, "category_id": 17, "bbox": [40, 10, 0, 5], "iscrowd": 0},  # no area
    ],
}


def _write(folder, data, sizes=None):
    folder.mkdir(parents=True, exist_ok=True)
    for image in data["images"]:
        size = (sizes or {}).get(image["id"], (image["width"], image["height"]))
        Image.new("RGB", size, (200, 100, 50)).save(folder / image["file_name"])


@pytest.fixture
def coco_folder(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(DATA))
    _write(tmp_path / "val2017", DATA)
    return tmp_path


def test_reader_converts_xywh_to_clipped_xyxy_and_drops_crowd_and_empty_boxes(coco_folder):
    data = detection_set(coco_folder, "val")
    assert data.category_ids == [4, 17] and data.num_classes == 2
    item = data[0]
    assert item["image_id"] == 5 and item["image"].shape == (3, 40, 80)
    assert item["image"].max() <= 1.0
    assert item["boxes"].tolist() == [[10.0, 5.0, 30.0, 15.0], [70.0, 30.0, 80.0, 40.0]]
    assert item["labels"].tolist() == [2, 1]  # category 17 is the second of the sorted ids, 4 the first
    empty = data[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_evaluation_set_shares_the_training_numbering_and_rejects_unknown_categories(coco_folder):
    coco = load_instances(coco_folder / "annotations" / "instances_val2017.json")
    shared = CocoInstances(coco, coco_folder / "val2017", category_ids=[1, 4, 17])
    assert shared[0]["labels"].tolist() == [3, 2]
    with pytest.raises(MimlensError, match=r"categories \[17\]"):
        CocoInstances(coco, coco_folder / "val2017", category_ids=[4])


def test_image_size_must_match_the_annotation_file(tmp_path):
    (tmp_path / "val.json").write_text(json.dumps(DATA))
    _write(tmp_path / "val", DATA, sizes={5: (81, 40)})
    data = detection_set(tmp_path, "val")
    with pytest.raises(MimlensError, match=r"wide.png is 81x40 pixels but the annotation file says 80x40"):
        data[0]


@pytest.mark.parametrize("broken, message", [
    ({"images": DATA["images"], "categories": DATA["categories"]}, "missing the 'annotations' list"),
    ({**DATA, "images": [{"id": 5, "file_name": "x.png", "width": 8}]}, r"images\[0\] lacks height"),
    ({**DATA, "annotations": [{"image_id": 99, "category_id": 4, "bbox": [0, 0, 1, 1]}]}, "image 99"),
    ({**DATA, "annotations": [{"image_id": 5, "category_id": 4, "bbox": [0, 0, 1]}]}, r"bbox must be \[x, y, w, h\]"),
])
def test_malformed_annotation_files_name_the_file_and_the_entry(tmp_path, broken, message):
    path = tmp_path / "instances_bad.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(MimlensError, match=message) as err:
        load_instances(path)
    assert str(path) in str(err.value)


def test_missing_split_is_reported(tmp_path):
    with pytest.raises(MimlensError, match="no COCO instances file for split 'train'"):
        detection_set(tmp_path, "train")


def test_exported_synthetic_scenes_read_back_with_every_visible_object(tmp_path):
    scenes = SyntheticScenes(6, 48, seed=3, num_objects=(1, 3))
    export_coco_instances(scenes, tmp_path, split="train", masks=False)
    data = detection_set(tmp_path, "train")
    assert data.category_ids == list(range(1, 9))  # the 8 shapes
    for i in range(len(scenes)):
        scene, item = scenes[i], data[i]
        visible = scene["classes"] >= 0
        assert item["image_id"] == i
        assert (item["image"] - scene["image"]).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit PNG
        assert item["labels"].tolist() == (scene["classes"][visible] + 1).tolist()
        expected = scene["boxes"][visible].clone()
        expected[:, 2:] += expected[:, :2]  # x, y, w, h -> x1, y1, x2, y2
        assert torch.equal(item["boxes"], expected)


def test_letterbox_scales_the_longer_side_and_pads_with_the_fill():
    image = torch.rand(3, 40, 80)
    out, scale = letterbox(image, 64, (0.1, 0.2, 0.3))
    assert out.shape == (3, 64, 64)
    assert scale.tolist() == pytest.approx([0.8, 0.8, 0.8, 0.8])
    assert torch.equal(out[:, 32:, :], torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1).expand(3, 32, 64))
    flat = torch.full((3, 40, 80), 0.7)
    assert torch.allclose(letterbox(flat, 64, (0, 0, 0))[0][:, :32], torch.tensor(0.7))


def test_transform_pads_slots_with_background_and_mirrors_boxes_with_the_image():
    image = torch.zeros(3, 32, 64)
    image[:, 4:8, 10:20] = 1.0  # the object's pixels
    item = {"image": image, "boxes": torch.tensor([[10.0, 4.0, 20.0, 8.0]]), "labels": torch.tensor([3]),
            "image_id": 12}
    plain = DetectionTransform(64, (0, 0, 0), max_objects=4)(item)
    assert plain["labels"].tolist() == [3, 0, 0, 0]
    assert plain["boxes"][0].tolist() == [10.0, 4.0, 20.0, 8.0] and plain["boxes"][1:].abs().sum() == 0
    flip = DetectionTransform(64, (0, 0, 0), max_objects=4, flip=True)
    mirrored = [out for out in (flip(item) for _ in range(20)) if out["boxes"][0, 0] != 10.0]
    assert mirrored, "a fair coin never came up in 20 tosses"
    x1, y1, x2, y2 = (int(v) for v in mirrored[0]["boxes"][0].tolist())
    assert (x1, y1, x2, y2) == (44, 4, 54, 8)
    assert mirrored[0]["image"][:, y1:y2, x1:x2].min() == 1.0 and mirrored[0]["image"][:, :32].sum() == 1.0 * 3 * 40


def test_transform_refuses_more_objects_than_slots():
    item = {"image": torch.zeros(3, 8, 8), "boxes": torch.zeros(3, 4), "labels": torch.ones(3, dtype=torch.int64),
            "image_id": 4}
    with pytest.raises(MimlensError, match="image 4 has 3 objects, more than max_objects"):
        DetectionTransform(8, (0, 0, 0), max_objects=2)(item)
