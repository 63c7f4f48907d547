"""Box AP of a detector on COCO instances, by pycocotools ``COCOeval(iouType='bbox')`` (never re-implemented).

Predictions are mapped back to the original image (divided by the letterbox scale, clipped to the image),
converted to COCO results — ``image_id``, ``category_id``, ``bbox`` as x, y, w, h pixels, ``score`` — and
scored against the ground-truth index with COCO's defaults: IoU 0.50:0.95, at most 100 detections per
image, area ranges small < 32² ≤ medium < 96² ≤ large (in pixels of the original image). Values are
fractions in [0, 1]; an area range without ground truth gives None (COCOeval's -1).
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.ops import box_convert

from mimlens.tasks.detection_data import CocoInstances, letterbox

__all__ = ["BBOX_METRICS", "METRIC_VARIANT", "box_ap", "box_ap_resampled", "coco_bbox_eval", "coco_bbox_eval_images",
           "predict"]

#: Names of ``COCOeval.stats[0:6]`` for iouType 'bbox'.
BBOX_METRICS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")
METRIC_VARIANT = "COCOeval bbox, maxDets 100, area ranges COCO default"


def _evaluated(coco_gt, results: list[dict[str, Any]], image_ids: list[int] | None = None):
    """A ``COCOeval(iouType='bbox')`` of ``results`` evaluated, accumulated and summarised (quietly)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"],
                               "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _stats(evaluator) -> dict[str, float | None]:
    stats = evaluator.stats[: len(BBOX_METRICS)]
    return {name: (float(v) if v >= 0 else None) for name, v in zip(BBOX_METRICS, stats, strict=True)}


def coco_bbox_eval(coco_gt, results: list[dict[str, Any]], image_ids: list[int] | None = None
                   ) -> dict[str, float | None]:
    """AP, AP50, AP75, APs, APm, APl of COCO ``results`` against ``coco_gt`` over ``image_ids`` (default all).

    No result at all is a valid (empty) detection set: every AP with ground truth is then 0.
    """
    return _stats(_evaluated(coco_gt, results, image_ids))


def coco_bbox_eval_images(coco_gt, results: list[dict[str, Any]]) -> tuple[dict[str, float | None], list[dict]]:
    """:func:`coco_bbox_eval` and one record per ground-truth image (ascending image id) from which
    :func:`box_ap` recomputes the AP of any resample of the images: ``image_id`` and ``categories``, one
    :func:`~mimlens.tasks.pose.image_records` record per category of ``coco_gt`` (sorted ids; 100 detections)."""
    from mimlens.tasks.pose import image_records

    evaluator = _evaluated(coco_gt, results)
    ids = sorted(coco_gt.getImgIds())
    per_category = [image_records(evaluator, ids, cat) for cat in sorted(coco_gt.getCatIds())]
    records = [{"image_id": int(image_id), "categories": [records[i] for records in per_category]}
               for i, image_id in enumerate(ids)]
    return _stats(evaluator), records


def box_ap(records: list[dict]) -> float:
    """COCO box AP (IoU 0.50:0.95, area "all", 100 detections) of :func:`coco_bbox_eval_images` records:
    each category's AP as :func:`~mimlens.tasks.pose.keypoint_ap` computes it, averaged over the categories
    with ground truth (COCOeval's mean over entries > -1); -1 when none has any."""
    from mimlens.tasks.pose import keypoint_ap

    if not records:
        return -1.0
    values = [keypoint_ap([r["categories"][c] for r in records]) for c in range(len(records[0]["categories"]))]
    valid = [v for v in values if v > -1]
    return float(np.mean(valid)) if valid else -1.0


def box_ap_resampled(records: list[dict], counts: np.ndarray) -> np.ndarray:
    """:func:`box_ap` of many resamples at once: ``counts`` (R, n) multiplicities of the n records; (R,) APs."""
    from mimlens.tasks.pose import keypoint_ap_resampled

    per_category = np.stack([keypoint_ap_resampled([r["categories"][c] for r in records], counts)
                             for c in range(len(records[0]["categories"]))])  # (C, R)
    valid = per_category > -1
    total, number = np.where(valid, per_category, 0.0).sum(0), valid.sum(0)
    return np.where(number > 0, total / np.maximum(number, 1), -1.0)


class _Letterboxed(Dataset):
    """Images of a dataset letterboxed to the model input, with what maps predictions back."""

    def __init__(self, dataset: Dataset, size: int, fill: tuple[float, ...]) -> None:
        self.dataset, self.size, self.fill = dataset, size, fill

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.dataset[index]
        image, scale = letterbox(item["image"], self.size, self.fill)
        return {"image": image, "scale": scale, "size": torch.tensor(item["image"].shape[-2:]),
                "image_id": torch.tensor(item["image_id"])}


@torch.no_grad()
def predict(detector: torch.nn.Module, dataset: CocoInstances | Subset, size: int, fill: tuple[float, ...],
            batch_size: int = 16, num_workers: int = 0) -> list[dict[str, Any]]:
    """COCO results (x, y, w, h boxes in original pixels) of ``detector`` on every image of ``dataset`` (a
    :class:`CocoInstances` or a ``Subset`` of one, e.g. a process's shard)."""
    category_ids = (dataset.dataset if isinstance(dataset, Subset) else dataset).category_ids
    detector.eval()
    device = next(detector.parameters()).device
    loader = DataLoader(_Letterboxed(dataset, size, fill), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    results = []
    for batch in loader:
        outputs = detector(list(batch["image"].to(device)))
        for out, scale, (height, width), image_id in zip(outputs, batch["scale"], batch["size"].tolist(),
                                                         batch["image_id"].tolist(), strict=True):
            boxes = out["boxes"].cpu() / scale
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            boxes = box_convert(boxes, "xyxy", "xywh")
            for box, label, score in zip(boxes.tolist(), out["labels"].tolist(), out["scores"].tolist(), strict=True):
                results.append({"image_id": image_id, "category_id": category_ids[label - 1],
                                "bbox": [round(v, 2) for v in box], "score": round(score, 5)})
    return results
