"""What each fine-tuning task contributes to a run: the objective, its training data, and its evaluation.

Every ``setup_<task>(cfg, encoder, prep, run_dir)`` returns a :class:`TaskSetup`. Evaluation runs in every
``torchrun`` process on its shard of the evaluation items (:func:`mimlens.distributed.shard`): sum
accumulators are all-reduced, per-item results (keypoints, boxes, per-item metric values) gathered back into
the data set's order, so N processes report what one process reports. ``evaluate()`` also fills the setup's
``evidence``: the per-item values of the metrics and the trivial baselines (:mod:`mimlens.tasks.baselines`)
on the same items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mimlens import distributed
from mimlens.errors import MimlensError

Metrics = tuple[dict[str, Any], dict[str, Any]]  # (metrics, variant)


@dataclass
class TaskSetup:
    """A task's objective (engine contract), training set and transform, and ``evaluate() -> Metrics``;
    ``write_extras(run_dir)`` writes task files after evaluation (main process only). ``evaluate()`` fills
    ``evidence`` (empty for a task without baselines): ``unit`` and ``ids`` of the evaluation items in order,
    ``per_item`` ({metric: values}), ``statistics`` ({metric: kind of :func:`mimlens.tasks.uncertainty.statistic`}
    where not a mean) and ``baselines`` ({name: {"metrics", "description", "per_item"}})."""

    objective: torch.nn.Module
    train_set: Dataset
    transform: Callable
    evaluate: Callable[[], Metrics]
    write_extras: Callable[[Path], None] = field(default=lambda run_dir: None)
    evidence: dict[str, Any] = field(default_factory=dict)


def normalizer(mean, std, keys=("image",), flip: bool = False) -> Callable:
    """Normalise ``keys`` of an item with the backbone's mean/std; ``flip``: mirror it (and its depth) half the
    time, drawing from torch's RNG (the engine seeds it per sample)."""
    from mimlens.tasks.images import normalize

    def transform(item: dict[str, Any]) -> dict[str, Any]:
        item = dict(item)
        mirror = flip and bool(torch.rand(()) < 0.5)
        for key in keys:
            item[key] = normalize(item[key].flip(-1) if mirror else item[key], mean, std)
        if mirror and "depth" in item:
            item["depth"] = item["depth"].flip(-1)
        return item

    return transform


class _Mapped(Dataset):
    def __init__(self, dataset: Dataset, transform: Callable) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.transform(self.dataset[index])


def eval_loader(dataset: Dataset, transform: Callable, cfg: dict[str, Any]) -> DataLoader:
    """This process's shard of ``dataset``, in order, in batches of the per-process micro-batch."""
    batch = max(1, int(cfg["optim"]["batch_size"]) // distributed.world_size())
    return DataLoader(_Mapped(distributed.shard(dataset), transform), batch_size=batch, shuffle=False,
                      num_workers=int(cfg["run"]["num_workers"]))


def stream_args(cfg: dict[str, Any]) -> dict[str, int]:
    """Batch size and workers of a pass over a data set shard (the per-process micro-batch)."""
    return {"batch_size": max(1, int(cfg["optim"]["batch_size"]) // distributed.world_size()),
            "num_workers": int(cfg["run"]["num_workers"])}


def eval_split(cfg: dict[str, Any]) -> str:
    split = cfg["data"]["eval_split"]
    if split not in ("val", "train"):
        raise MimlensError(f"data.eval_split must be 'val' or 'train', got {split!r}")
    return split


def synthetic_sizes(cfg: dict[str, Any], default_eval: int) -> tuple[int, int]:
    """(training items, evaluation items) of a synthetic source (the training count again for ``eval_split:
    train``)."""
    from mimlens.data.spec import DEFAULT_COUNTS
    from mimlens.tasks.datasets import synthetic_count

    num = synthetic_count(str(cfg["data"]["source"])) or DEFAULT_COUNTS["synthetic"]
    if eval_split(cfg) == "train":
        return num, num
    return num, int(cfg["data"]["num_eval"] or default_eval)


def square(size) -> int:
    if not isinstance(size, int):
        raise MimlensError(f"fine-tuning needs a square input; the model expects {size}")
    return size


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------- semantic


def setup_classification(cfg: dict[str, Any], encoder, prep: dict[str, Any], run_dir: Path,
                         linear: bool = False) -> TaskSetup:
    from mimlens.models.family import family_of
    from mimlens.tasks.backbone import pooled_features
    from mimlens.tasks.baselines import class_counts, majority_class
    from mimlens.tasks.classification import Classifier, LinearProbe, cross_entropy, evaluate_classification
    from mimlens.tasks.datasets import classification_set, report_skipped
    from mimlens.tasks.objective import TaskObjective

    section = cfg["linear" if linear else "cls"]
    source, seed, difficulty = str(cfg["data"]["source"]), int(cfg["train"]["seed"]), cfg["data"]["synthetic"]
    num, num_eval = synthetic_sizes(cfg, 256)
    size = square(prep["img_size"])
    train_set = classification_set(source, "train", size, seed, num, difficulty, section["label"])
    eval_set = classification_set(source, eval_split(cfg), size, seed, num_eval, difficulty, section["label"])
    num_classes = _num_classes(train_set, section["label"])
    if linear:
        if section["block"] is not None:
            family_of(encoder).block(encoder, section["block"], "linear.block (--probe-block)")
        with torch.no_grad():
            dim = pooled_features(encoder.eval(), torch.zeros(2, 3, size, size), section["block"],
                                  section["pool"]).shape[1]
        model = LinearProbe(encoder, num_classes, dim, section["block"], section["pool"])
        loss = cross_entropy(section["label"])
    else:
        model = Classifier(encoder, num_classes)
        loss = cross_entropy(section["label"], float(section["label_smoothing"]))
    mean, std = prep["mean"], prep["std"]
    evidence: dict[str, Any] = {}

    def evaluate() -> Metrics:
        acc = evaluate_classification(model, eval_loader(eval_set, normalizer(mean, std), cfg), section["label"])
        acc.all_reduce_()
        items = acc.per_item()
        labels = items.pop("label")
        majority = majority_class(class_counts(train_set, section["label"], num_classes, **stream_args(cfg)))
        report_skipped(train_set)
        report_skipped(eval_set)
        hits = [int(y == majority) for y in labels]
        evidence.update(unit="image", ids=list(range(len(labels))), per_item=items, labels=labels, baselines={
            "majority class": {"metrics": {"top1": sum(hits) / len(hits)}, "per_item": {"top1": hits},
                               "description": f"the training set's most frequent class ({majority}) for every image"}})
        variant = {"metric": "top-k accuracy over the evaluation images (top-k only for k <= classes)",
                   "label": section["label"], "num_classes": num_classes, "num_images": int(acc.sums["images"])}
        if linear:
            where = "the final output" if section["block"] is None else f"block {section['block']} (0-based)"
            pooled = "CLS token" if section["pool"] == "cls" else "mean of the patch tokens"
            variant["probe"] = (f"BatchNorm1d without affine + linear on the frozen backbone; {where}, {pooled}; "
                                "AdamW (MAE uses LARS)")
        else:
            variant["fine_tune"] = (f"full, layer-wise lr decay {cfg['optim']['layer_decay']}, drop path "
                                    f"{section['drop_path']}, label smoothing {section['label_smoothing']}")
        return acc.compute(), variant

    return TaskSetup(TaskObjective(model, loss), train_set, normalizer(mean, std, flip=not linear), evaluate,
                     evidence=evidence)


def setup_linear(cfg: dict[str, Any], encoder, prep: dict[str, Any], run_dir: Path) -> TaskSetup:
    return setup_classification(cfg, encoder, prep, run_dir, linear=True)


def _num_classes(dataset: Dataset, label: str) -> int:
    attr = "num_fine_classes" if label == "fine_label" else "num_classes"
    count = int(getattr(dataset, attr, 0) or 0)
    if count < 2:
        raise MimlensError(f"the training data has no class count for label {label!r}")
    return count


# --------------------------------------------------------------------------------------- geometric, motion


def setup_depth(cfg: dict[str, Any], encoder, prep: dict[str, Any], run_dir: Path) -> TaskSetup:
    from mimlens.tasks.baselines import mean_depth_map, median_depth, resize_depth_map
    from mimlens.tasks.datasets import depth_set
    from mimlens.tasks.depth import DepthMetrics, DepthModel, crop_mask, silog_loss
    from mimlens.tasks.objective import TaskObjective

    section = cfg["depth"]
    source, seed, difficulty = str(cfg["data"]["source"]), int(cfg["train"]["seed"]), cfg["data"]["synthetic"]
    num, num_eval = synthetic_sizes(cfg, 256)
    size = (square(prep["img_size"]),) * 2
    train_set = depth_set(source, "train", size, seed, num, difficulty)
    eval_set = depth_set(source, eval_split(cfg), size, seed, num_eval, difficulty)
    lo, hi = float(section["min_depth"]), float(section["max_depth"])
    model = DepthModel(encoder, size, hi, int(section["channels"]), int(section["num_deconv"]))

    def loss(model, batch):
        gt = batch["depth"]
        pred = model(batch["image"], gt.shape[-2:])
        return {"loss": silog_loss(pred, gt, (gt > lo) & (gt < hi))}

    evidence: dict[str, Any] = {}

    @torch.no_grad()
    def evaluate() -> Metrics:
        metrics, mean_map, median = (DepthMetrics(lo, hi, section["crop"]) for _ in range(3))
        depth_map = mean_depth_map(train_set, size, lo, hi, **stream_args(cfg))
        model.eval()
        for batch in eval_loader(eval_set, normalizer(prep["mean"], prep["std"]), cfg):
            gt = batch["depth"]
            metrics.update(model(batch["image"].to(_device(model)), gt.shape[-2:]).cpu(), gt)
            mean_map.update(resize_depth_map(depth_map, gt.shape[-2:], gt.shape[0]), gt)
            valid = (gt > lo) & (gt < hi) & crop_mask(*gt.shape[-2:], section["crop"])
            median.update(median_depth(gt, valid, hi), gt)
        per_item = metrics.per_item()
        evidence.update(unit="image", ids=list(range(len(per_item["rmse"]))), per_item=per_item, baselines={
            "training mean depth map": {
                "metrics": mean_map.all_reduce_().compute(), "per_item": mean_map.per_item(),
                "description": "per-pixel mean of the training depths, resized to each image"},
            "per-image constant (ground-truth median)": {
                "metrics": median.all_reduce_().compute(), "per_item": median.per_item(),
                "description": "each image's median valid ground-truth depth, constant over the image: it reads "
                               "the ground truth but cannot follow depth across the image (a ground plane's "
                               "gradient), so a position-aware map such as the training mean can beat it"}})
        return metrics.all_reduce_().compute(), metrics.variant()

    transform = normalizer(prep["mean"], prep["std"], flip=True)
    return TaskSetup(TaskObjective(model, loss), train_set, transform, evaluate, evidence=evidence)


def setup_pose(cfg: dict[str, Any], encoder, prep: dict[str, Any], run_dir: Path) -> TaskSetup:
    from mimlens.tasks.baselines import keypoint_template, template_results
    from mimlens.tasks.datasets import pose_set
    from mimlens.tasks.objective import TaskObjective
    from mimlens.tasks.pose import CocoKeypointCrops, PoseModel, heatmap_loss, keypoint_sigmas
    from mimlens.tasks.pose import coco_keypoint_eval_images as keypoint_eval
    from mimlens.tasks.pose import predict as predict_keypoints

    section = cfg["pose"]
    source, seed, difficulty = str(cfg["data"]["source"]), int(cfg["train"]["seed"]), cfg["data"]["synthetic"]
    num, num_eval = synthetic_sizes(cfg, 256)
    size = square(prep["img_size"])
    train_coco, train_load, _ = pose_set(source, "train", size, seed, num, difficulty)
    eval_coco, eval_load, _ = pose_set(source, eval_split(cfg), size, seed, num_eval, difficulty)
    num_keypoints = len(train_coco.loadCats(train_coco.getCatIds())[0]["keypoints"])
    model = PoseModel(encoder, num_keypoints, (size, size), int(section["channels"]))
    heatmap_size = model.heatmap_size
    sigma = float(section["sigma"])
    train_set = CocoKeypointCrops(train_coco, None, (size, size), heatmap_size, sigma, load=train_load)
    eval_set = CocoKeypointCrops(eval_coco, None, (size, size), heatmap_size, sigma, load=eval_load)
    sigmas = keypoint_sigmas(eval_coco, section["oks_sigmas"])
    evidence: dict[str, Any] = {}

    def loss(model, batch):
        return {"loss": heatmap_loss(model(batch["image"]), batch["target"], batch["weight"])}

    def evaluate() -> Metrics:
        flip_pairs = eval_set.flip_pairs() if section["flip_test"] else None
        loader = eval_loader(eval_set, normalizer(prep["mean"], prep["std"]), cfg)
        results = distributed.gather_sharded(predict_keypoints(model, loader, flip_pairs))
        variant = {
            "metric": "COCO keypoint AP/AR over OKS 0.50:0.95, pycocotools COCOeval(iouType='keypoints')",
            "boxes": "ground-truth person boxes with at least one labelled keypoint (HRNet's protocol), top-down "
                     "crops, box grown to the input aspect and scaled 1.25",
            "skipped_no_keypoints": eval_set.skipped_no_keypoints,
            "oks_sigmas": [float(s) for s in sigmas],
            "flip_test": flip_pairs is not None,
            "heatmap": f"{heatmap_size[0]}x{heatmap_size[1]}, Gaussian sigma {sigma:g} px, MSE weighted by "
                       "visibility",
            "num_instances": len(results),
        }
        metrics, images = keypoint_eval(eval_coco, results, sigmas)
        template = keypoint_template(train_set.annotations, num_keypoints)
        base, base_images = keypoint_eval(eval_coco, template_results(template, eval_set.annotations), sigmas)
        evidence.update(unit="image", ids=[r["image_id"] for r in images], per_item={"ap": images},
                        statistics={"ap": "keypoint_ap"}, baselines={"mean keypoint template": {
                            "metrics": base, "per_item": {"ap": base_images},
                            "description": "the training instances' mean box-normalised keypoints in each box"}})
        return metrics, variant

    return TaskSetup(TaskObjective(model, loss), train_set, normalizer(prep["mean"], prep["std"]), evaluate,
                     evidence=evidence)


def setup_tracking(cfg: dict[str, Any], encoder, prep: dict[str, Any], run_dir: Path) -> TaskSetup:
    from mimlens.tasks.baselines import zero_motion
    from mimlens.tasks.datasets import tracking_sequences
    from mimlens.tasks.objective import TaskObjective
    from mimlens.tasks.tracking import OneStreamTracker, TrackingMetrics, TrackingPairs, track_sequence, tracking_loss

    section = cfg["track"]
    source, seed, difficulty = str(cfg["data"]["source"]), int(cfg["train"]["seed"]), cfg["data"]["synthetic"]
    num, num_eval = synthetic_sizes(cfg, 16)
    size = square(prep["img_size"])
    search = int(section["search_size"] or size)
    template = int(section["template_size"] or search // 2)
    length = int(section["sequence_length"])
    model = OneStreamTracker(encoder, template, search, int(section["head_channels"]))
    train_seqs = tracking_sequences(source, "train", size, seed, num, length, difficulty)
    eval_seqs = tracking_sequences(source, eval_split(cfg), size, seed, num_eval, length, difficulty)
    tf, sf = float(section["template_factor"]), float(section["search_factor"])
    pairs = TrackingPairs(train_seqs, template, search, length=sum(len(s.boxes) for s in train_seqs),
                          template_factor=tf, search_factor=sf, max_gap=int(section["max_gap"]))

    def loss(model, batch):
        total, parts = tracking_loss(model(batch["template"], batch["search"]), batch["box"])
        return {"loss": total, **{k: torch.tensor(v) for k, v in parts.items()}}

    evidence: dict[str, Any] = {}

    def evaluate() -> Metrics:
        metrics, still = TrackingMetrics(), TrackingMetrics()
        for seq in distributed.shard(eval_seqs):
            metrics.update(track_sequence(model, seq, prep["mean"], prep["std"], tf, sf), seq.boxes, seq.visible)
            still.update(zero_motion(seq.boxes), seq.boxes, seq.visible)
        metrics.all_reduce_()
        still.all_reduce_()
        evidence.update(unit="sequence", ids=[seq.name for seq in eval_seqs], per_item=metrics.per_item(),
                        baselines={"zero motion": {
                            "metrics": {k: v for k, v in still.compute().items() if not isinstance(v, list)},
                            "per_item": still.per_item(), "description": "the first box held for the whole sequence"}})
        variant = metrics.variant()
        variant["crops"] = f"template {template} px ({tf:g}x the box), search {search} px ({sf:g}x the box)"
        return metrics.compute(), variant

    transform = normalizer(prep["mean"], prep["std"], keys=("template", "search"))
    return TaskSetup(TaskObjective(model, loss), pairs, transform, evaluate, evidence=evidence)


# ---------------------------------------------------------------------------------------------- combined


def setup_detection(cfg: dict[str, Any], encoder, prep: dict[str, Any], run_dir: Path) -> TaskSetup:
    """Faster R-CNN on the backbone; synthetic scenes are first written as a COCO instances folder
    (``RUN/data``) and read back like any COCO folder."""
    from mimlens.io import save_json
    from mimlens.tasks.baselines import mean_box_results, mean_boxes
    from mimlens.tasks.datasets import synthetic_count
    from mimlens.tasks.detection import DetectionObjective, build_detector, detector_variant
    from mimlens.tasks.detection_data import DetectionTransform, detection_set, export_synthetic
    from mimlens.tasks.detection_eval import coco_bbox_eval_images, predict
    from mimlens.tasks.detection_figures import loss_curves

    size = square(prep["img_size"])
    source, det, seed = str(cfg["data"]["source"]), cfg["det"], int(cfg["train"]["seed"])
    root, num_train = Path(source), synthetic_count(source)
    if num_train is not None:
        root = run_dir / "data"
        if distributed.is_main():
            export_synthetic(num_train, int(cfg["data"]["num_eval"] or 256), size, seed, cfg["data"]["synthetic"],
                             root)
        distributed.barrier()
    train_set = detection_set(root, "train")
    eval_set = detection_set(root, "val", category_ids=train_set.category_ids)
    detector = build_detector(
        encoder, train_set.num_classes, size, prep["mean"], prep["std"], out_channels=int(det["channels"]),
        scales=tuple(float(s) for s in det["scales"]), anchor_scale=float(det["anchor_scale"]),
        aspect_ratios=tuple(float(r) for r in det["aspect_ratios"]), proposals=int(det["proposals"]),
        rois_per_image=int(det["rois_per_image"]), box_head_dim=int(det["box_head_dim"]),
        score_thresh=float(det["score_thresh"]), detections_per_img=int(det["detections_per_img"]))
    transform = DetectionTransform(size, prep["mean"], int(det["max_objects"]), bool(det["flip"]))
    results: list[dict] = []
    order = {image_id: i for i, image_id in enumerate(eval_set.image_ids.tolist())}

    evidence: dict[str, Any] = {}

    def evaluate() -> Metrics:
        local = predict(detector, distributed.shard(eval_set), size, prep["mean"],
                        max(1, int(cfg["optim"]["batch_size"]) // distributed.world_size()),
                        int(cfg["run"]["num_workers"]))
        parts = distributed.gather_sharded([local])  # one list per process
        results[:] = sorted((r for part in parts for r in part), key=lambda r: order[r["image_id"]])
        metrics, images = coco_bbox_eval_images(eval_set.coco, results)
        base, base_images = coco_bbox_eval_images(eval_set.coco,
                                                  mean_box_results(mean_boxes(train_set.coco), eval_set.coco))
        evidence.update(unit="image", ids=[r["image_id"] for r in images], per_item={"ap": images},
                        statistics={"ap": "box_ap"}, baselines={"mean box per category": {
                            "metrics": base, "per_item": {"ap": base_images},
                            "description": "in every image, one box per category at the training boxes' mean "
                                           "image-normalised box, scored by the category's share"}})
        return metrics, detector_variant(detector, eval_set, results, size)

    def write_extras(out: Path) -> None:
        save_json(results, out / "detections_val.json")
        if (out / "log.jsonl").is_file():
            loss_curves([out], out / "figures" / "det_loss_curves.png")

    return TaskSetup(DetectionObjective(detector), train_set, transform, evaluate, write_extras, evidence)
