"""Trivial baselines against independent computations on small data."""

import numpy as np
import pytest
import torch

from mimlens.tasks.baselines import (
    class_counts,
    keypoint_template,
    majority_class,
    mean_depth_map,
    median_depth,
    template_results,
    zero_motion,
)


def test_majority_class_counts_every_training_label():
    labels = [2, 0, 2, 1, 2, 1, 0, 1, 1]
    dataset = [{"label": torch.tensor(y)} for y in labels]
    counts = class_counts(dataset, "label", 4, batch_size=4)
    assert counts.tolist() == [labels.count(c) for c in range(4)]
    assert majority_class(counts) == 1
    assert majority_class(torch.tensor([3.0, 5.0, 5.0])) == 1  # lowest index on ties


def test_mean_depth_map_is_the_per_pixel_mean_over_valid_training_pixels():
    rng = np.random.default_rng(0)
    depths = rng.uniform(-1, 12, size=(7, 4, 5))  # some below 0.1 and above 10: invalid
    depths[:, 0, 0] = 20.0  # a pixel never valid
    found = mean_depth_map([{"depth": torch.tensor(d)} for d in depths], (4, 5), 0.1, 10.0, batch_size=3)
    valid = (depths > 0.1) & (depths < 10.0)
    expected = np.zeros((4, 5))
    for y in range(4):
        for x in range(5):
            cell = [d[y, x] for d in depths if 0.1 < d[y, x] < 10.0]
            expected[y, x] = np.mean(cell) if cell else depths[valid].mean()
    assert found.numpy() == pytest.approx(expected)


def test_median_depth_is_each_images_median_valid_depth():
    gt = torch.tensor([[[1.0, 2.0], [3.0, 50.0]], [[0.0, 0.0], [0.0, 0.0]]])
    valid = (gt > 0.1) & (gt < 10)
    found = median_depth(gt, valid, 10.0)
    assert (found[0] == 2.0).all() and (found[1] == 10.0).all()  # lower median of 1, 2, 3; no valid pixel


def test_keypoint_template_is_the_mean_box_normalised_position():
    anns = [{"bbox": [10, 20, 10, 20], "keypoints": [15, 30, 2, 0, 0, 0], "image_id": 1, "category_id": 1},
            {"bbox": [0, 0, 4, 4], "keypoints": [3, 1, 1, 0, 0, 0], "image_id": 2, "category_id": 1}]
    template = keypoint_template(anns, 2)
    assert template.flatten().tolist() == pytest.approx([(0.5 + 0.75) / 2, (0.5 + 0.25) / 2, 0.5, 0.5])
    placed = template_results(template, anns[:1])[0]
    assert placed["keypoints"] == pytest.approx([10 + 0.625 * 10, 20 + 0.375 * 20, 1, 15, 30, 1])
    assert placed["score"] == 1.0 and placed["image_id"] == 1


def test_keypoint_ap_of_image_records_equals_pycocotools():
    from mimlens.tasks.datasets import pose_set
    from mimlens.tasks.pose import CocoKeypointCrops, coco_keypoint_eval_images, keypoint_ap

    coco, load, _ = pose_set("synthetic:12", "val", 32, 0, 12, {})
    crops = CocoKeypointCrops(coco, None, (32, 32), (8, 8), load=load)
    train = keypoint_template(crops.annotations, crops.num_keypoints)
    rng = np.random.default_rng(0)
    results = template_results(train + torch.tensor(rng.normal(0, 0.05, train.shape)), crops.annotations)
    for r in results:
        r["score"] = float(rng.uniform())
    metrics, records = coco_keypoint_eval_images(coco, results)
    assert [r["image_id"] for r in records] == sorted(coco.getImgIds())
    assert keypoint_ap(records) == pytest.approx(metrics["ap"], abs=1e-12)


def test_zero_motion_scores_the_held_first_box():
    from mimlens.tasks.tracking import TrackingMetrics, sequence_curves

    boxes = torch.tensor([[10.0, 10, 5, 5], [12, 10, 5, 5], [20, 15, 6, 4]], dtype=torch.float64)
    held = zero_motion(boxes)
    assert (held == boxes[0]).all() and held.shape == boxes.shape
    metrics = TrackingMetrics()
    metrics.update(held, boxes)
    success, precision, _ = sequence_curves(boxes[[0, 0, 0]], boxes)
    assert metrics.compute()["suc"] == pytest.approx(float(success.mean()))
    assert metrics.per_item()["precision"] == [pytest.approx(float(precision[20]))]


def test_mean_box_per_category_is_the_mean_normalised_box_scored_by_share():
    from mimlens.tasks.baselines import mean_box_results, mean_boxes
    from mimlens.tasks.detection_data import coco_index

    dataset = {"images": [{"id": 1, "file_name": "a", "width": 100, "height": 50},
                          {"id": 2, "file_name": "b", "width": 200, "height": 100}],
               "categories": [{"id": 4, "name": "a"}, {"id": 9, "name": "b"}],
               "annotations": [{"image_id": 1, "category_id": 4, "bbox": [10, 5, 20, 10]},
                               {"image_id": 2, "category_id": 4, "bbox": [40, 30, 20, 30]},
                               {"image_id": 2, "category_id": 9, "bbox": [0, 0, 100, 50]},
                               {"image_id": 2, "category_id": 9, "bbox": [0, 0, 1, 1], "iscrowd": 1}]}
    coco = coco_index(dataset, "toy")
    boxes = mean_boxes(coco)
    assert boxes[4][0] == pytest.approx([0.15, 0.2, 0.15, 0.25]) and boxes[4][1] == pytest.approx(2 / 3)
    assert boxes[9][0] == pytest.approx([0.0, 0.0, 0.5, 0.5]) and boxes[9][1] == pytest.approx(1 / 3)
    placed = mean_box_results(boxes, coco)
    assert [(r["image_id"], r["category_id"]) for r in placed] == [(1, 4), (1, 9), (2, 4), (2, 9)]
    assert placed[2]["bbox"] == pytest.approx([30, 20, 30, 25]) and placed[2]["score"] == pytest.approx(2 / 3)
