"""Layer-wise frozen probes: for every block of a model, where classification, depth, keypoint and tracking
information can be read off its features with a closed-form (ridge) or training-free probe.

Features: each block's output (ViT family ``blocks.<i>``; Swin ``layers.<s>.blocks.<j>``, every block of
every stage), captured with :class:`mimlens.analysis.features.BlockFeatures`; the last block's is the model's
``forward_features`` output, i.e. with the final norm. Prefix tokens (CLS, registers) are dropped; per-token
probes use every patch token of the block's grid, pooled probes the mean patch token. Images are normalised
with the model's mean and std (:func:`mimlens.models.preprocessing`) and read by the fine-tuning readers
(:mod:`mimlens.tasks.datasets`).

Ridge probes (:mod:`mimlens.tasks.probes.ridge`): features standardised with the training rows, λ chosen on the
last :data:`HELD_OUT` of the training items (by item index), then refitted on all of them.

- ``cls``: one-hot labels from the mean patch token; predicted class = argmax; top-1 over evaluation images.
- ``depth``: per token, the mean log-depth of its valid pixels (min_depth < gt < max_depth of the depth
  task; tokens without one are left out of the fit); the token map of predictions is bilinearly upsampled to
  the ground-truth resolution and exponentiated; metrics of :class:`mimlens.tasks.depth.DepthMetrics`
  (per image over valid pixels, then over images).
- ``pose``: top-down crops of the fine-tuning protocol (:class:`mimlens.tasks.pose.CocoKeypointCrops`);
  per token, each keypoint's Gaussian heatmap at the token centre, σ = one token (unlabelled keypoints give
  zero heatmaps); decoded by :func:`mimlens.tasks.pose.decode_heatmaps` on the token grid; COCO OKS AP by
  pycocotools.
- ``track``: training-free correlation tracking (:mod:`mimlens.tasks.probes.correlation_tracker`), LaSOT SUC and
  precision (:class:`mimlens.tasks.tracking.TrackingMetrics`).

Uncertainty (:mod:`mimlens.tasks.uncertainty`): each row keeps the primary metric's per-item ``values`` in
the evaluation set's order — per image correct (0/1) for top-1, per image RMSE for depth, per sequence SUC
for tracking, per image COCOeval records for AP — and its ``se`` (sd / sqrt(n); a bootstrap over images for
AP). The same data, sizes and seed give the same items, so two models' probes (or two blocks of one) compare
by paired standard errors. Each task also scores its trivial baseline on the same items
(:mod:`mimlens.tasks.baselines`: majority class, mean depth map, mean keypoint template, zero motion); when no
block scores better than it, the task's ``note`` says why (:func:`baseline_note`).

Every sum is all-reducible and every item is seen by one ``torchrun`` process, so N processes report what
one reports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from mimlens import distributed
from mimlens.errors import MimlensError
from mimlens.models.family import BlockRef, family_of
from mimlens.tasks.probes.ridge import RidgeSums, select_ridge

HELD_OUT = 0.2  # fraction of the training items, the last ones, that choose λ
DEFAULT_TRAIN, DEFAULT_EVAL = 1024, 256  # synthetic images
RIDGE = "ridge regression ({target}), features standardised on the training images, λ chosen on the last 20 % "


def model_blocks(model: nn.Module) -> list[BlockRef]:
    """The model's blocks in forward order: one index over the whole model, the Swin stage as a label."""
    return family_of(model).blocks(model)


@contextmanager
def block_maps(model: nn.Module) -> Iterator[Callable[[torch.Tensor], dict[int, torch.Tensor]]]:
    """Yields ``maps(images) -> {block index: (B, h, w, C) patch-token map}`` for every block (no gradients,
    eval mode for the duration)."""
    from mimlens.analysis.capture import eval_mode
    from mimlens.analysis.features import BlockFeatures, block_samples
    from mimlens.tasks.backbone import token_grid

    blocks = model_blocks(model)
    with ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        feats = stack.enter_context(BlockFeatures(model, unit="token", prefix_policy="drop"))

        @torch.no_grad()
        def maps(images: torch.Tensor) -> dict[int, torch.Tensor]:
            out = model.forward_features(images)
            captured = feats.pop()
            captured[blocks[-1].name] = block_samples(out, "token", feats.prefix_tokens, "drop")
            base = token_grid(model, tuple(images.shape[-2:]))
            return {b.index: _as_map(captured[b.name], len(images), base, b.name) for b in blocks}

        yield maps


def _as_map(tokens: torch.Tensor, batch: int, base: tuple[int, int], name: str) -> torch.Tensor:
    """(B·h·w, C) token rows → (B, h, w, C); the grid is the patch grid downsampled by a power of two (Swin)."""
    count = tokens.shape[0] // batch
    factor = round((base[0] * base[1] / max(count, 1)) ** 0.5)
    grid = (base[0] // max(factor, 1), base[1] // max(factor, 1))
    if grid[0] * grid[1] != count:
        raise MimlensError(f"block {name}: {count} tokens per image do not form the {base[0]}x{base[1]} patch grid "
                           "or a downsampling of it")
    return tokens.view(batch, *grid, tokens.shape[-1])


# ---------------------------------------------------------------------------------------------- tasks


class _Counts:
    """Top-1 accuracy; ``add`` takes predicted class indices, ``update`` the probe's (B, 1, 1, classes) scores."""

    def __init__(self, label: str) -> None:
        self.label, self.items = label, []

    def update(self, pred: torch.Tensor, items: list[dict], indices: list[int]) -> None:
        self.add(pred.flatten(1, 2).mean(1).argmax(1).cpu(), items, indices)

    def add(self, classes: torch.Tensor, items: list[dict], indices: list[int]) -> None:
        labels = torch.stack([torch.as_tensor(item[self.label]) for item in items])
        self.items += (classes == labels).double().tolist()

    def compute(self) -> tuple[dict[str, float], list[float]]:
        values = distributed.gather_sharded(self.items)
        return {"top1": sum(values) / max(len(values), 1)}, values


class _Depth:
    """Depth metrics; ``add`` takes (B, H, W) depths at the ground truth's resolution, ``update`` the probe's
    (B, h, w, 1) log-depth token maps."""

    def __init__(self, lo: float, hi: float) -> None:
        from mimlens.tasks.depth import DepthMetrics

        self.metrics = DepthMetrics(lo, hi)

    def update(self, pred: torch.Tensor, items: list[dict], indices: list[int]) -> None:
        ups = [F.interpolate(log_depth[None, None], size=tuple(item["depth"].shape), mode="bilinear",
                             align_corners=False)[0, 0].exp()
               for log_depth, item in zip(pred[..., 0].double().cpu(), items, strict=True)]
        self.add(ups, items, indices)

    def add(self, depths, items: list[dict], indices: list[int]) -> None:
        for depth, item in zip(depths, items, strict=True):
            self.metrics.update(depth[None], item["depth"][None])

    def compute(self) -> tuple[dict[str, float], list[float | None]]:
        per_item = self.metrics.per_item()
        return self.metrics.all_reduce_().compute(), per_item["rmse"]


class _Keypoints:
    """COCO keypoint AP; ``add`` takes COCO keypoint results, ``update`` the probe's (B, h, w, K) heatmaps."""

    def __init__(self, coco, sigmas) -> None:
        self.coco, self.sigmas, self.results = coco, sigmas, []

    def update(self, pred: torch.Tensor, items: list[dict], indices: list[int]) -> None:
        from mimlens.tasks.pose import keypoint_results

        batch = {key: torch.stack([item[key] for item in items]) for key in ("box", "image_id", "category_id")}
        self.add(keypoint_results(pred.permute(0, 3, 1, 2), batch), items, indices)

    def add(self, results: list[dict], items: list[dict], indices: list[int]) -> None:
        self.results += results

    def compute(self) -> tuple[dict[str, float], list[dict]]:
        from mimlens.tasks.pose import coco_keypoint_eval_images

        return coco_keypoint_eval_images(self.coco, distributed.gather_sharded(self.results), self.sigmas)


@dataclass(frozen=True)
class Baseline:
    """A trivial predictor scored like the probes: ``predict(indices, items)`` gives what the scorer's
    ``add`` takes."""

    name: str
    description: str
    predict: Callable[[list[int], list[dict]], Any]


@dataclass
class RidgeTask:
    """A ridge probe: data, per-token (or pooled) targets on a grid, and a per-block scorer."""

    name: str
    train_set: Dataset
    eval_set: Dataset
    outputs: int
    pooled: bool
    targets: Callable[[list[dict], tuple[int, int]], tuple[torch.Tensor, torch.Tensor]]  # (B, T, k), keep (B, T)
    scorer: Callable[[], Any]
    primary: str
    higher_is_better: bool
    variant: str
    baseline: Callable[[], Baseline]  # fitted on the training items when called
    statistic: str = "mean"  # of the per-item values (mimlens.tasks.uncertainty.statistic)
    extra: dict[str, Any] = field(default_factory=dict)


def cls_task(source: str, size: int, seed: int, num_train: int, num_eval: int, difficulty: dict) -> RidgeTask:
    from mimlens.tasks.datasets import classification_set, synthetic_count

    label = "fine_label" if synthetic_count(source) is not None else "label"
    sets = [classification_set(source, split, size, seed, n, difficulty, label)
            for split, n in (("train", num_train), ("val", num_eval))]
    classes = int(getattr(sets[0], "num_fine_classes" if label == "fine_label" else "num_classes", 0) or 0)
    if classes < 2:
        raise MimlensError(f"classification data {source!r} has no class count for label {label!r}")

    def targets(items, grid):
        labels = torch.stack([torch.as_tensor(item[label]) for item in items]).long()
        return F.one_hot(labels, classes).double()[:, None], torch.ones(len(items), 1, dtype=torch.bool)

    def baseline() -> Baseline:
        from mimlens.tasks.baselines import class_counts, majority_class

        majority = majority_class(class_counts(sets[0], label, classes))
        return Baseline("majority class", f"the training images' most frequent class ({majority}) for every image",
                        lambda indices, items: torch.full((len(items),), majority))

    variant = (RIDGE.format(target=f"one-hot {label}, {classes} classes, on the mean patch token") + "of the "
               "training images; predicted class = argmax; top-1 accuracy over the evaluation images")
    return RidgeTask("cls", *sets, classes, True, targets, lambda: _Counts(label), "top1", True, variant, baseline)


def depth_task(source: str, size: int, seed: int, num_train: int, num_eval: int, difficulty: dict) -> RidgeTask:
    from mimlens.tasks.datasets import depth_set
    from mimlens.tasks.registry import TASKS

    lo, hi = float(TASKS["depth"].section["min_depth"]), float(TASKS["depth"].section["max_depth"])
    sets = [depth_set(source, split, (size, size), seed, n, difficulty) for split, n in (("train", num_train),
                                                                                           ("val", num_eval))]

    def targets(items, grid):
        ys, keeps = [], []
        for item in items:
            gt = item["depth"].double()
            valid = ((gt > lo) & (gt < hi)).double()
            pooled = F.adaptive_avg_pool2d(torch.stack([torch.log(gt.clamp(min=lo)) * valid, valid])[None], grid)[0]
            ys.append((pooled[0] / pooled[1].clamp(min=1e-12)).flatten()[:, None])
            keeps.append(pooled[1].flatten() > 0)
        return torch.stack(ys), torch.stack(keeps)

    def baseline() -> Baseline:
        from mimlens.tasks.baselines import mean_depth_map, resize_depth_map

        mean_map = mean_depth_map(sets[0], tuple(sets[0][0]["depth"].shape), lo, hi)
        return Baseline("mean depth map", "the training images' per-pixel mean valid depth, resized to each image",
                        lambda indices, items: [resize_depth_map(mean_map, tuple(item["depth"].shape), 1)[0].double()
                                                for item in items])

    variant = (RIDGE.format(target="per-token mean log-depth of the token's valid pixels") + "of the training "
               "images; token predictions bilinearly upsampled to the ground truth and exponentiated; RMSE and "
               "AbsRel in depth units, per image over valid pixels, then the mean over images")
    return RidgeTask("depth", *sets, 1, False, targets, lambda: _Depth(lo, hi), "rmse", False, variant, baseline,
                     extra={"min_depth": lo, "max_depth": hi})


def pose_task(source: str, size: int, seed: int, num_train: int, num_eval: int, difficulty: dict,
              grid: tuple[int, int]) -> RidgeTask:
    from mimlens.tasks.datasets import pose_set
    from mimlens.tasks.pose import gaussian_heatmaps, keypoint_sigmas, to_heatmap

    sets = [_KeypointCrops(*pose_set(source, split, size, seed, n, difficulty)[:2], size, grid)
            for split, n in (("train", num_train), ("val", num_eval))]
    eval_coco = sets[1].crops.coco
    sigmas = keypoint_sigmas(eval_coco)

    def targets(items, block_grid):
        if tuple(block_grid) == tuple(grid):  # the crop's own target: sigma one token
            maps = torch.stack([item["target"] for item in items])
        else:  # a coarser Swin stage: the same Gaussians on its token grid
            maps = torch.stack([gaussian_heatmaps(to_heatmap(item["keypoints"][:, :2], tuple(item["box"].tolist()),
                                                             block_grid), (item["keypoints"][:, 2] > 0).double(),
                                                  block_grid, 1.0)[0] for item in items])
        return maps.flatten(2).transpose(1, 2).double(), torch.ones(maps.shape[0], maps[0, 0].numel(),
                                                                    dtype=torch.bool)

    variant = (RIDGE.format(target="per-token value of each keypoint's Gaussian heatmap at the token centre, sigma "
                                   "one token") + "of the training crops; decoded on the token grid by argmax with "
               "HRNet's quarter-cell shift; COCO OKS AP (pycocotools) on ground-truth boxes, crops as in "
               "fine-tuning, no flip test")
    def baseline() -> Baseline:
        from mimlens.tasks.baselines import keypoint_template, template_results

        template = keypoint_template(sets[0].crops.annotations, sets[0].crops.num_keypoints)
        annotations = sets[1].crops.annotations
        return Baseline("mean keypoint template", "the training instances' mean box-normalised keypoints in each box",
                        lambda indices, items: template_results(template, [annotations[i] for i in indices]))

    return RidgeTask("pose", *sets, sets[0].crops.num_keypoints, False, targets,
                     lambda: _Keypoints(eval_coco, sigmas), "ap", True, variant, baseline, "keypoint_ap",
                     {"oks_sigmas": [float(s) for s in sigmas]})


class _KeypointCrops(Dataset):
    """The fine-tuning crops (:class:`~mimlens.tasks.pose.CocoKeypointCrops`) with heatmaps on the token grid
    (sigma one token), each item also carrying its annotation's ``keypoints`` (K, 3) in image pixels."""

    def __init__(self, coco, load, size: int, grid: tuple[int, int]) -> None:
        from mimlens.tasks.pose import CocoKeypointCrops

        self.crops = CocoKeypointCrops(coco, None, (size, size), grid, 1.0, load=load)

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> dict:
        return {**self.crops[index], "keypoints": torch.from_numpy(self.crops.keypoints[index].copy())}


# ---------------------------------------------------------------------------------------------- passes


def _items(dataset: Dataset, batch_size: int, progress: bool, desc: str) -> Iterator[tuple[list[int], list[dict]]]:
    """This process's items (indices rank, rank + world, …) in batches, with their indices."""
    from tqdm.auto import tqdm

    mine = list(range(distributed.rank(), len(dataset), distributed.world_size()))
    chunks = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    for chunk in tqdm(chunks, desc=desc, unit="batch", disable=not (progress and distributed.is_main())):
        yield chunk, [dataset[i] for i in chunk]


def _rows(fmap: torch.Tensor, pooled: bool) -> torch.Tensor:
    return fmap.mean(dim=(1, 2)) if pooled else fmap.flatten(0, 2)


def ridge_probe(task: RidgeTask, maps, blocks: list[BlockRef], prep: dict, batch_size: int, device, progress: bool
                ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Fit one ridge map per block on the training items, score it and the task's trivial baseline on the
    evaluation items; returns (rows, the ``items`` section, baselines)."""
    from mimlens.tasks.images import normalize

    num_train = len(task.train_set)
    held = max(1, round(HELD_OUT * num_train))
    if num_train - held < 1:
        raise MimlensError(f"{task.name} probe: {num_train} training items; expected at least 2 (the last "
                           f"{HELD_OUT:.0%} choose λ)")
    size = prep["img_size"]
    dims = {i: fmap.shape[-1] for i, fmap in maps(torch.zeros(1, 3, size, size, device=device)).items()}
    fit_rows = {b.index: RidgeSums(dims[b.index], task.outputs) for b in blocks}
    held_rows = {b.index: RidgeSums(dims[b.index], task.outputs) for b in blocks}

    def images(items):
        return torch.stack([normalize(item["image"], prep["mean"], prep["std"]) for item in items]).to(device)

    for indices, items in _items(task.train_set, batch_size, progress, f"{task.name} fit"):
        out = maps(images(items))
        is_held = torch.tensor([i >= num_train - held for i in indices])
        for b in blocks:
            fmap = out[b.index]
            y, keep = task.targets(items, tuple(fmap.shape[1:3]))
            x = _rows(fmap, task.pooled)
            y, keep = y.flatten(0, 1), keep.flatten()
            held_row = is_held.repeat_interleave(keep.shape[0] // len(items))
            for rows, sums in ((keep & ~held_row, fit_rows), (keep & held_row, held_rows)):
                rows = rows.to(x.device)
                sums[b.index].update(x[rows], y.to(x.device)[rows])
    fits = {}
    for b in blocks:
        fit_rows[b.index].all_reduce_()
        held_rows[b.index].all_reduce_()
        fits[b.index] = select_ridge(fit_rows[b.index], held_rows[b.index])
    scorers = {b.index: task.scorer() for b in blocks}
    baseline, baseline_scorer = task.baseline(), task.scorer()
    for indices, items in _items(task.eval_set, batch_size, progress, f"{task.name} eval"):
        out = maps(images(items))
        for b in blocks:
            fmap = out[b.index]
            pred = fits[b.index][0].predict(_rows(fmap, task.pooled))
            shape = (len(items), 1, 1) if task.pooled else fmap.shape[:3]
            scorers[b.index].update(pred.view(*shape, task.outputs), items, indices)
        baseline_scorer.add(baseline.predict(indices, items), items, indices)
    rows, ids = [], None
    for b in blocks:
        metrics, values = scorers[b.index].compute()
        ids = _ids(values, task.statistic)
        rows.append({"block": b.index, "name": b.name, "stage": b.stage, "lambda": fits[b.index][1]["lambda"],
                     "lambda_factor": fits[b.index][1]["lambda_factor"], **metrics,
                     **_uncertainty(values, task.statistic)})
    metrics, values = baseline_scorer.compute()
    baselines = {baseline.name: {"description": baseline.description, **metrics,
                                 **_uncertainty(values, task.statistic)}}
    return rows, {"unit": "image", "ids": ids, "statistic": task.statistic}, baselines


def _ids(values: list, statistic: str) -> list[int]:
    """Item ids: the image id of each keypoint record, else the item's index in the evaluation set."""
    return [r["image_id"] for r in values] if statistic == "keypoint_ap" else list(range(len(values)))


def _uncertainty(values: list, statistic: str) -> dict[str, Any]:
    """``se`` of the metric (:func:`mimlens.tasks.uncertainty.summary`) and the per-item ``values``."""
    from mimlens.tasks.uncertainty import summary

    return {"se": summary(values, statistic)["se"], "values": values}


def tracking_probe(source: str, size: int, seed: int, num_eval: int, difficulty: dict, maps, blocks: list[BlockRef],
                   prep: dict, device, progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Correlation tracking per block on the evaluation sequences (``num_eval`` // 16 of 16 frames, synthetic)."""
    from tqdm.auto import tqdm

    from mimlens.tasks.baselines import zero_motion
    from mimlens.tasks.datasets import tracking_sequences
    from mimlens.tasks.probes.correlation_tracker import TEMPERATURE, track_by_correlation
    from mimlens.tasks.registry import TASKS
    from mimlens.tasks.tracking import TrackingMetrics

    section = TASKS["track"].section
    length, factor = int(section["sequence_length"]), float(section["search_factor"])
    seqs = tracking_sequences(source, "val", size, seed, max(1, num_eval // length), length, difficulty)
    metrics = {b.index: TrackingMetrics() for b in blocks}
    still = TrackingMetrics()
    shown = progress and distributed.is_main()
    for seq in tqdm(distributed.shard(seqs), desc="track", unit="seq", disable=not shown):
        boxes = track_by_correlation(maps, seq, [b.index for b in blocks], size, prep["mean"], prep["std"], factor,
                                     TEMPERATURE, device)
        for b in blocks:
            metrics[b.index].update(boxes[b.index], seq.boxes, seq.visible)
        still.update(zero_motion(seq.boxes), seq.boxes, seq.visible)

    def scored(tracker: TrackingMetrics) -> dict[str, Any]:
        values = tracker.per_item()["suc"]
        result = tracker.all_reduce_().compute()
        return {**{k: result[k] for k in ("suc", "precision", "norm_precision")}, **_uncertainty(values, "mean")}

    rows = [{"block": b.index, "name": b.name, "stage": b.stage, "lambda": None, "lambda_factor": None,
             **scored(metrics[b.index])} for b in blocks]
    info = {"num_sequences": len(seqs), "num_eval_images": sum(len(s.boxes) for s in seqs),
            "items": {"unit": "sequence", "ids": list(range(len(seqs))), "statistic": "mean"},
            "baselines": {"zero motion": {"description": "the first frame's ground-truth box held for the whole "
                                                        "sequence", **scored(still)}},
            "variant": f"training-free correlation tracking: template = mean of the block's patch tokens inside the "
                       f"first ground-truth box; per frame, cosine similarity of every token of the search crop "
                       f"({factor:g}x the box, centred on the previous prediction) to the template, centre = "
                       f"soft-argmax with temperature {TEMPERATURE:g}, size carried from the first frame; LaSOT SUC "
                       f"(mean success over IoU 0:0.05:1) and precision (centre error <= 20 px), per sequence "
                       f"then over sequences"}
    return rows, info


# ---------------------------------------------------------------------------------------------- driver


def probe_task_names() -> tuple[str, ...]:
    """The tasks of :mod:`mimlens.tasks.registry` that declare a frozen probe, in registry order."""
    from mimlens.tasks.registry import TASKS

    return tuple(name for name, entry in TASKS.items() if entry.probe is not None)


@dataclass
class ProbeContext:
    """What a task's frozen probe (``Task.probe`` of the task registry) receives: the model, the data and its
    sizes, ``maps(images) -> {block index: (B, h, w, C)}`` over the ``blocks`` probed, and the run settings."""

    model: nn.Module
    data: str
    size: int
    seed: int
    num_train: int | None
    num_eval: int | None
    difficulty: dict
    maps: Callable
    blocks: list[BlockRef]
    prep: dict
    batch_size: int
    device: Any
    progress: bool


def layerwise_probes(model: nn.Module, tasks: tuple[str, ...] | list[str] | None = None, *,
                     data: str = "synthetic", num_train: int | None = None, num_eval: int | None = None,
                     blocks: list[int] | None = None, batch_size: int = 64, seed: int = 0,
                     difficulty: dict | None = None, device: torch.device | str = "cpu",
                     progress: bool = False) -> dict[str, Any]:
    """Probe every block (or the 0-based ``blocks``) of ``model`` for each task (default: every task with a frozen
    probe); returns the ``probe.json`` document: ``blocks`` and, per task, ``primary``, ``higher_is_better``,
    ``variant``, image counts, ``items`` (``unit``, ``ids``, ``statistic``: whose per-item values the rows hold),
    ``baselines`` (name -> ``description``, the metrics, ``se``, ``values``) and ``rows`` (one per block:
    ``block``, ``name``, ``stage``, the chosen ``lambda``, the metrics, ``se`` of the primary metric and its
    per-item ``values``). ``difficulty``: the synthetic scenes' settings (default: the fine-tuning's
    ``data.synthetic``).

    ``data``: ``synthetic[:N]`` or a folder in the fine-tuning layout. Synthetic: ``num_train`` (default N,
    else 1024) training and ``num_eval`` (default 256) evaluation images, seeded by ``seed``; tracking uses
    ``num_eval`` // 16 sequences of 16 frames. Folders: every item of the train and val splits.
    """
    from mimlens.models import preprocessing
    from mimlens.tasks.datasets import synthetic_count
    from mimlens.tasks.registry import TASKS
    from mimlens.tasks.setups import square

    names = probe_task_names()
    tasks = names if tasks is None else tuple(tasks)
    unknown = [t for t in tasks if t not in names]
    if unknown or not tasks:
        raise MimlensError(f"tasks {list(tasks)!r}: expected one or more of {', '.join(names)}")
    if batch_size < 1:
        raise MimlensError(f"batch_size must be positive, got {batch_size}")
    prep = preprocessing(model)
    size = square(prep["img_size"])
    all_blocks = model_blocks(model)
    chosen = all_blocks if blocks is None else _select(all_blocks, blocks)
    count = synthetic_count(data)
    if count is not None:
        num_train = int(num_train or (count if ":" in data else DEFAULT_TRAIN))
        num_eval = int(num_eval or DEFAULT_EVAL)
    if difficulty is None:
        from mimlens.tasks.run import COMMON

        difficulty = COMMON["data"]["synthetic"]
    doc: dict[str, Any] = {"data": data, "seed": seed, "synthetic": difficulty, "img_size": size,
                           "held_out_fraction": HELD_OUT,
                           "blocks": [{"block": b.index, "name": b.name, "stage": b.stage} for b in chosen],
                           "tasks": {}}
    with block_maps(model) as maps:
        context = ProbeContext(model, data, size, seed, num_train, num_eval, difficulty, maps, chosen, prep,
                               batch_size, device, progress)
        for name in tasks:
            doc["tasks"][name] = section = TASKS[name].probe_function()(context)
            note = baseline_note(name, section)
            if note:
                section["note"] = note
    return doc


def ridge_section(task: RidgeTask, ctx: ProbeContext) -> dict[str, Any]:
    """A ridge-probed task's ``probe.json`` section."""
    rows, items, baselines = ridge_probe(task, ctx.maps, ctx.blocks, ctx.prep, ctx.batch_size, ctx.device,
                                         ctx.progress)
    return {"primary": task.primary, "higher_is_better": task.higher_is_better, "variant": task.variant,
            "num_train_images": len(task.train_set), "num_eval_images": len(task.eval_set), **task.extra,
            "items": items, "baselines": baselines, "rows": rows}


def _sizes(ctx: ProbeContext) -> tuple:
    return ctx.data, ctx.size, ctx.seed, ctx.num_train, ctx.num_eval, ctx.difficulty


def cls_probe(ctx: ProbeContext) -> dict[str, Any]:
    from mimlens.tasks.datasets import report_skipped

    task = cls_task(*_sizes(ctx))
    section = ridge_section(task, ctx)
    report_skipped(task.train_set)
    report_skipped(task.eval_set)
    return section


def depth_probe(ctx: ProbeContext) -> dict[str, Any]:
    return ridge_section(depth_task(*_sizes(ctx)), ctx)


def pose_probe(ctx: ProbeContext) -> dict[str, Any]:
    from mimlens.tasks.backbone import token_grid

    return ridge_section(pose_task(*_sizes(ctx), token_grid(ctx.model, (ctx.size, ctx.size))), ctx)


def track_probe(ctx: ProbeContext) -> dict[str, Any]:
    rows, info = tracking_probe(ctx.data, ctx.size, ctx.seed, ctx.num_eval or DEFAULT_EVAL, ctx.difficulty, ctx.maps,
                                ctx.blocks, ctx.prep, ctx.device, ctx.progress)
    return {"primary": "suc", "higher_is_better": True, **info, "rows": rows}


def baseline_note(name: str, task: dict[str, Any]) -> str | None:
    """One sentence when no probed block scores better than the task's trivial baseline (point values), saying
    why a ridge probe with an intercept can score worse; None otherwise."""
    primary, higher = task["primary"], task["higher_is_better"]
    if not task.get("baselines"):
        return None
    label, best = (max if higher else min)(((k, v[primary]) for k, v in task["baselines"].items()),
                                           key=lambda pair: pair[1])
    rows = [r[primary] for r in task["rows"]]
    if not rows or any((v > best) if higher else (v < best) for v in rows):
        return None
    why = ("the map knows each pixel's position, while the probe's intercept is one constant and a token knows "
           "its position only through the model's position embedding; tokens of a model whose embedding is "
           "untrained (a random-init learned one) carry almost none, so the probe cannot follow the depth "
           "gradient across the image" if name == "depth" else
           "the probe's intercept guarantees only the training mean target, which this baseline can beat")
    return f"no block beats the {label} ({best:.4g}): {why}"


def _select(all_blocks: list[BlockRef], wanted: list[int]) -> list[BlockRef]:
    bad = [i for i in wanted if not 0 <= i < len(all_blocks)]
    if bad:
        raise MimlensError(f"blocks {bad}: the model has blocks 0..{len(all_blocks) - 1}")
    return [all_blocks[i] for i in sorted(set(wanted))]
