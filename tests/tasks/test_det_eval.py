"""Box AP through pycocotools: known answers, and predictions mapped back to original image pixels."""

import json

import pytest
import torch
from PIL import Image
from torch import nn

from mimlens.tasks.detection_data import CocoInstances, load_instances
from mimlens.tasks.detection_eval import BBOX_METRICS, coco_bbox_eval, predict

# Boxes (x, y, w, h) of every COCO area range: small < 32² <= medium < 96² <= large.
TOY = {
    "images": [{"id": 7, "file_name": "a.png", "width": 200, "height": 160},
               {"id": 9, "file_name": "b.png", "width": 120, "height": 200}],
    "categories": [{"id": 3, "name": "ring"}, {"id": 11, "name": "star"}],
    "annotations": [
        {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 12, 20, 15], "area": 300, "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 11, "bbox": [40, 30, 60, 50], "area": 3000, "iscrowd": 0},
        {"id": 3, "image_id": 9, "category_id": 3, "bbox": [5, 20, 110, 120], "area": 13200, "iscrowd": 0},
        {"id": 4, "image_id": 9, "category_id": 11, "bbox": [0, 150, 40, 40], "area": 1600, "iscrowd": 1},
    ],
}


@pytest.fixture
def toy(tmp_path):
    for image in TOY["images"]:
        Image.new("RGB", (image["width"], image["height"]), (90, 120, 150)).save(tmp_path / image["file_name"])
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(TOY))
    return load_instances(path), tmp_path


def _perfect(coco):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in coco.dataset["annotations"] if not a["iscrowd"]]


def test_perfect_detections_give_ap_one(toy):
    coco, _ = toy
    metrics = coco_bbox_eval(coco, _perfect(coco))
    assert set(metrics) == set(BBOX_METRICS)
    for name in BBOX_METRICS:
        assert metrics[name] == pytest.approx(1.0), name


def test_no_detection_gives_zero_and_missing_area_range_gives_none(toy):
    coco, _ = toy
    metrics = coco_bbox_eval(coco, [])
    assert all(metrics[name] == 0.0 for name in BBOX_METRICS)
    only_small = coco_bbox_eval(coco, _perfect(coco), image_ids=[7])
    assert only_small["ap_large"] is None  # image 7 has no large object: COCOeval's -1
    assert only_small["ap_small"] == pytest.approx(1.0)


def test_half_recall_gives_the_interpolated_area_51_of_101(toy):
    # One category, two objects, one found (score 0.9) plus a false positive (score 0.8): precision is 1 for
    # recall 0 … 0.5 and 0 above, so AP = 51 of COCO's 101 recall points, at every IoU threshold.
    coco, _ = toy
    results = [{"image_id": 7, "category_id": 3, "bbox": [10, 12, 20, 15], "score": 0.9},
               {"image_id": 7, "category_id": 3, "bbox": [150, 100, 20, 20], "score": 0.8}]
    perfect_star = [r for r in _perfect(coco) if r["category_id"] == 11]
    metrics = coco_bbox_eval(coco, results + perfect_star)
    assert metrics["ap50"] == pytest.approx((51 / 101 + 1.0) / 2)
    assert metrics["ap"] == pytest.approx((51 / 101 + 1.0) / 2)


def test_crowd_region_is_not_a_miss_and_a_detection_on_it_is_not_a_false_positive(toy):
    coco, _ = toy
    on_crowd = {"image_id": 9, "category_id": 11, "bbox": [0, 150, 40, 40], "score": 0.99}
    assert coco_bbox_eval(coco, _perfect(coco) + [on_crowd])["ap"] == pytest.approx(1.0)


class Oracle(nn.Module):
    """Returns the ground truth in the letterboxed input frame, as a trained detector would."""

    def __init__(self, truth):
        super().__init__()
        self.truth = truth
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, images):
        assert all(image.shape == (3, 64, 64) for image in images)
        out = []
        for _ in images:
            boxes, labels = self.truth.pop(0)
            out.append({"boxes": boxes, "labels": labels, "scores": torch.linspace(0.9, 0.5, len(labels))})
        return out


def test_predict_maps_letterboxed_boxes_back_to_original_pixels(toy):
    coco, folder = toy
    dataset = CocoInstances(coco, folder)
    truth = []
    for index in range(len(dataset)):
        item = dataset[index]
        height, width = item["image"].shape[-2:]
        scale = 64 / max(height, width)
        sx, sy = round(width * scale) / width, round(height * scale) / height
        truth.append((item["boxes"] * torch.tensor([sx, sy, sx, sy]), item["labels"]))
    results = predict(Oracle(truth), dataset, 64, (0.5, 0.5, 0.5), batch_size=2)
    assert {r["category_id"] for r in results} == {3, 11}
    expected = {(a["image_id"], a["category_id"]): a["bbox"] for a in TOY["annotations"] if not a["iscrowd"]}
    for r in results:
        assert r["bbox"] == pytest.approx(expected[(r["image_id"], r["category_id"])], abs=0.02)
    assert coco_bbox_eval(coco, results)["ap"] == pytest.approx(1.0)



def _scene_index(seed=0, images=12, categories=(3, 11, 20)):
    """A COCO index of ``images`` 100x80 images with 1-3 boxes each of random categories, and detections: each
    box jittered, some missed, plus false positives, every score random."""
    import numpy as np

    from mimlens.tasks.detection_data import coco_index

    rng = np.random.default_rng(seed)
    dataset = {"images": [{"id": i + 1, "file_name": f"{i}.png", "width": 100, "height": 80} for i in range(images)],
               "categories": [{"id": c, "name": f"c{c}"} for c in categories], "annotations": []}
    results = []
    for image in dataset["images"]:
        for _ in range(int(rng.integers(1, 4))):
            box = [float(rng.uniform(0, 50)), float(rng.uniform(0, 40)), float(rng.uniform(8, 50)),
                   float(rng.uniform(8, 40))]
            cat = int(rng.choice(categories))
            dataset["annotations"].append({"id": len(dataset["annotations"]) + 1, "image_id": image["id"],
                                           "category_id": cat, "bbox": box})
            if rng.uniform() < 0.8:
                jitter = (np.asarray(box) + rng.normal(0, 3, 4)).tolist()
                results.append({"image_id": image["id"], "category_id": cat, "bbox": jitter,
                                "score": float(rng.uniform())})
        results.append({"image_id": image["id"], "category_id": int(rng.choice(categories)),
                        "bbox": [float(rng.uniform(0, 60)), float(rng.uniform(0, 50)), 20.0, 20.0],
                        "score": float(rng.uniform())})
    return coco_index(dataset, "scene"), results


def test_box_ap_of_image_records_equals_pycocotools_and_resamples_agree():
    import numpy as np

    from mimlens.tasks.detection_eval import box_ap, box_ap_resampled, coco_bbox_eval_images

    coco, results = _scene_index()
    metrics, records = coco_bbox_eval_images(coco, results)
    assert metrics == coco_bbox_eval(coco, results)
    assert [r["image_id"] for r in records] == sorted(coco.getImgIds()) and len(records[0]["categories"]) == 3
    assert 0.05 < metrics["ap"] < 0.95  # neither trivial nor perfect
    assert box_ap(records) == pytest.approx(metrics["ap"], abs=1e-12)
    draws = np.random.default_rng(1).integers(0, len(records), size=(5, len(records)))
    counts = np.stack([np.bincount(d, minlength=len(records)) for d in draws])
    expected = [box_ap([records[i] for i in np.sort(d)]) for d in draws]
    np.testing.assert_allclose(box_ap_resampled(records, counts), expected, atol=1e-12)
    np.testing.assert_allclose(box_ap_resampled(records, np.ones((1, len(records)))), [metrics["ap"]], atol=1e-12)
