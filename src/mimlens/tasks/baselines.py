"""Trivial predictors every fine-tuning must beat, scored on the same evaluation items with the same metric.

- classification: the training set's majority class (lowest class index on ties), top-1;
- depth: the training set's mean depth map (per pixel over the training images' valid pixels,
  ``min_depth < gt < max_depth``, at one reference shape; pixels never valid take the mean of all valid
  pixels), bilinearly resized to each evaluation image; and the per-image constant: each image's median
  ground-truth depth over its evaluated pixels, constant over the image. It reads the ground truth, yet it is
  no lower bound: no constant follows depth across an image (on synthetic scenes, the ground plane's depth
  grows towards the top), so the position-aware mean map usually beats it;
- pose: the mean normalised keypoint template, keypoint k at the training instances' mean of
  ((x - box x) / box w, (y - box y) / box h) over instances where k is labelled (the box centre where it
  never is), placed in each evaluation box with score 1;
- tracking: the zero-motion tracker, the first frame's ground-truth box held for the whole sequence;
- detection: the mean box per category, one detection per category in every image at the training boxes'
  mean image-normalised (x, y, w, h) of that category, scored by the category's share of training boxes.

Training-set statistics stream over this process's shard and are summed over ``torchrun`` processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mimlens import distributed


def _loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(distributed.shard(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers)


def class_counts(dataset: Dataset, label_key: str, num_classes: int, batch_size: int = 64,
                 num_workers: int = 0) -> torch.Tensor:
    """(num_classes,) float64 counts of ``item[label_key]`` over the data set (negative labels skipped)."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for batch in _loader(dataset, batch_size, num_workers):
        labels = batch[label_key].view(-1)
        counts += torch.bincount(labels[labels >= 0], minlength=num_classes)[:num_classes].double()
    return distributed.all_reduce_sum_many_([counts])[0]


def majority_class(counts: torch.Tensor) -> int:
    """The most frequent class (lowest index on ties)."""
    return int(torch.argmax(counts))


def mean_depth_map(dataset: Dataset, shape: tuple[int, int], min_depth: float, max_depth: float,
                   batch_size: int = 64, num_workers: int = 0) -> torch.Tensor:
    """(H, W) per-pixel mean of the valid training depths (``item["depth"]``, nearest-resized to ``shape``)."""
    total = torch.zeros(shape, dtype=torch.float64)
    count = torch.zeros(shape, dtype=torch.float64)
    for batch in _loader(dataset, batch_size, num_workers):
        depth = batch["depth"].double()
        if tuple(depth.shape[-2:]) != tuple(shape):
            depth = F.interpolate(depth[:, None], size=tuple(shape), mode="nearest")[:, 0]
        valid = (depth > min_depth) & (depth < max_depth)
        total += torch.where(valid, depth, 0.0).sum(0)
        count += valid.double().sum(0)
    distributed.all_reduce_sum_many_([total, count])
    overall = total.sum() / count.sum().clamp(min=1)
    return torch.where(count > 0, total / count.clamp(min=1), overall)


def resize_depth_map(depth_map: torch.Tensor, shape: tuple[int, int], batch: int) -> torch.Tensor:
    """(batch, *shape) copies of ``depth_map`` bilinearly resized to ``shape``."""
    resized = F.interpolate(depth_map[None, None].float(), size=tuple(shape), mode="bilinear", align_corners=False)
    return resized[:, 0].expand(batch, *shape)


def median_depth(gt: torch.Tensor, valid: torch.Tensor, fill: float) -> torch.Tensor:
    """(B, H, W) maps holding each image's median ground-truth depth over its ``valid`` pixels (torch's lower
    median; ``fill`` where an image has no valid pixel)."""
    medians = [row[mask].median() if mask.any() else torch.tensor(fill, dtype=gt.dtype)
               for row, mask in zip(gt.reshape(gt.shape[0], -1), valid.reshape(gt.shape[0], -1), strict=True)]
    return torch.stack(medians)[:, None, None].expand_as(gt).clone()


def keypoint_template(annotations: list[dict], num_keypoints: int) -> torch.Tensor:
    """(K, 2) mean box-normalised position of each keypoint over COCO annotations where it is labelled
    (v > 0); (0.5, 0.5) for a keypoint never labelled."""
    total = torch.zeros(num_keypoints, 2, dtype=torch.float64)
    count = torch.zeros(num_keypoints, dtype=torch.float64)
    for ann in annotations:
        x, y, w, h = (float(v) for v in ann["bbox"])
        points = torch.tensor(ann.get("keypoints") or [0.0] * 3 * num_keypoints, dtype=torch.float64).view(-1, 3)
        labelled = points[:, 2] > 0
        normalised = torch.stack([(points[:, 0] - x) / w, (points[:, 1] - y) / h], dim=1)
        total += torch.where(labelled[:, None], normalised, 0.0)
        count += labelled.double()
    return torch.where(count[:, None] > 0, total / count.clamp(min=1)[:, None], torch.full_like(total, 0.5))


def template_results(template: torch.Tensor, annotations: list[dict]) -> list[dict]:
    """COCO keypoint results placing ``template`` in each annotation's box, every keypoint and instance
    scored 1."""
    results = []
    for ann in annotations:
        x, y, w, h = (float(v) for v in ann["bbox"])
        points = torch.stack([x + template[:, 0] * w, y + template[:, 1] * h, torch.ones(len(template),
                                                                                       dtype=torch.float64)], 1)
        results.append({"image_id": int(ann["image_id"]), "category_id": int(ann["category_id"]),
                        "keypoints": points.flatten().tolist(), "score": 1.0})
    return results


def zero_motion(boxes: torch.Tensor) -> torch.Tensor:
    """(T, 4) predictions of the zero-motion tracker: the first ground-truth box in every frame."""
    return boxes[:1].double().expand(len(boxes), 4).clone()


def mean_boxes(coco) -> dict[int, tuple[list[float], float]]:
    """Per category of a COCO instances index: the mean image-normalised box (x / W, y / H, w / W, h / H) over
    its non-crowd annotations and its share of them; categories without one are left out."""
    sums: dict[int, list[float]] = {}
    for ann in coco.dataset["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        info = coco.imgs[ann["image_id"]]
        x, y, w, h = (float(v) for v in ann["bbox"])
        width, height = float(info["width"]), float(info["height"])
        row = sums.setdefault(int(ann["category_id"]), [0.0] * 5)
        for k, v in enumerate((x / width, y / height, w / width, h / height, 1.0)):
            row[k] += v
    total = sum(row[4] for row in sums.values())
    return {cat: ([v / row[4] for v in row[:4]], row[4] / total) for cat, row in sorted(sums.items())}


def mean_box_results(boxes: dict[int, tuple[list[float], float]], coco) -> list[dict]:
    """COCO results placing each category's mean box (:func:`mean_boxes`) in every image of ``coco``, scored
    by the category's share."""
    results = []
    for image_id in sorted(coco.getImgIds()):
        width, height = float(coco.imgs[image_id]["width"]), float(coco.imgs[image_id]["height"])
        for cat, ((x, y, w, h), share) in boxes.items():
            results.append({"image_id": int(image_id), "category_id": cat,
                            "bbox": [x * width, y * height, w * width, h * height], "score": share})
    return results
