"""One fine-tuning run from a config: load the backbone, drop its last blocks, attach the task head, train,
evaluate with the field's metric, and write the run directory; or a sweep over the number of dropped blocks.

The config is a plain nested dict (:data:`DEFAULTS` ← ``--config`` YAML ← command-line flags). The
learning rate follows the engine's rule: ``optim.lr = base_lr × batch_size / 256``. ``optim.layer_decay``
defaults to 0.65 for ViT-family backbones and 0.9 for Swin (SPEC §4).

Run directory: ``config.yaml`` (with the ``model`` section that ``load_model(RUN)`` rebuilds the fine-tuned
backbone from), ``log.jsonl``, ``backbone.safetensors``, ``metrics.json`` (every number with the metric
variant that produced it) and, for a sweep, ``drop_<K>/`` runs, ``drop_sweep.json`` and
``figures/layer_drop.png``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mimlens.config import load_yaml, resolve, save_config
from mimlens.errors import MimlensError
from mimlens.io import save_json

TASKS = ("cls", "linear", "depth", "pose", "track")

DEFAULTS: dict[str, Any] = {
    "task": "cls",
    "init": "vit-tiny-64",  # MODEL: preset, timm:NAME, checkpoint file (with arch) or run directory
    "arch": None,
    "model": {"name": None, "kwargs": {}},  # kwargs: build_model overrides; name: filled in (the result's arch)
    "drop_last": 0,
    "sweep_drop": None,  # list of K: one run per K and drop_sweep.json
    "data": {
        "source": "synthetic:2048",  # synthetic[:N] (N training items; sequences for track) or a folder
        "num_eval": None,  # synthetic evaluation items: 256 images, or 16 sequences for track
        "eval_split": "val",  # "train" evaluates on the training items (a check that the run can fit them)
        "synthetic": {"num_objects": [1, 2], "background_strength": 0.5},  # SPEC §7's easier scenes
    },
    "cls": {"label": "fine_label", "label_smoothing": 0.1, "drop_path": 0.1},
    "linear": {"label": "fine_label", "block": None, "pool": "cls"},
    "depth": {"min_depth": 1e-3, "max_depth": 10.0, "crop": "none", "channels": 64, "num_deconv": 3},
    "pose": {"sigma": None, "flip_test": True, "channels": 64, "oks_sigmas": None},
    "track": {"template_size": None, "search_size": None, "template_factor": 2.0, "search_factor": 4.0,
              "head_channels": 64, "sequence_length": 16, "max_gap": 10},
    "optim": {
        "base_lr": 4e-3,  # for a batch of 256: lr = base_lr × batch_size / 256 (5e-4 at batch 32)
        "batch_size": 32,
        "weight_decay": 0.05,
        "layer_decay": None,  # None: 0.65 ViT family, 0.9 Swin
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "warmup_steps": 20,
        "warmup_lr": 1e-6,  # absolute
        "min_lr": 1e-6,  # absolute
        "clip_grad": 5.0,
        "lr": None,  # filled in
    },
    "train": {"epochs": None, "steps": 200, "seed": 0, "log_every": 10},
    "run": {"out": None, "device": "auto", "num_workers": 0, "progress": True},
}

# What each task changes in the defaults before the YAML and the flags apply.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "linear": {"optim": {"base_lr": 0.08, "weight_decay": 0.0, "layer_decay": 1.0}},
}

PRIMARY = {"cls": ("top1", True), "linear": ("top1", True), "depth": ("rmse", False), "pose": ("ap", True),
           "track": ("suc", True)}


def resolve_config(config_path: str | Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS ← task defaults ← YAML ← flags (dotted keys; None = not given). ``model.kwargs`` takes any
    timm keyword; a YAML or flag that sets ``train.steps`` clears ``train.epochs`` and vice versa."""
    layer = load_yaml(config_path) if config_path is not None else {}
    task = flags.get("task") or layer.get("task") or DEFAULTS["task"]
    if task not in TASKS:
        raise MimlensError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    defaults = _merge(copy.deepcopy(DEFAULTS), TASK_DEFAULTS.get(task, {}))
    kwargs = (layer.get("model") or {}).get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise MimlensError(f"{config_path}: model.kwargs must be a mapping, got {type(kwargs).__name__}")
    defaults["model"]["kwargs"] = {**kwargs}
    cfg = resolve(defaults, config_path, flags)
    for given in (layer.get("train") or {}, {k.split(".")[1]: v for k, v in flags.items()
                                             if k.startswith("train.") and v is not None}):
        if given.get("steps") is not None and given.get("epochs") is None:
            cfg["train"]["epochs"] = None
        if given.get("epochs") is not None and given.get("steps") is None:
            cfg["train"]["steps"] = None
    if cfg["drop_last"] and cfg["sweep_drop"]:
        raise MimlensError("give drop_last or sweep_drop, not both")
    return cfg


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        base[key] = _merge(base[key], value) if isinstance(value, dict) else value
    return base


# ---------------------------------------------------------------------------------------------- tasks


@dataclass
class TaskSetup:
    """What a task contributes to a run: the objective, its training data and how to evaluate."""

    objective: torch.nn.Module
    train_set: Dataset
    transform: Callable
    evaluate: Callable[[], tuple[dict[str, Any], dict[str, Any]]]  # → (metrics, variant)


def _normalizer(mean, std, keys=("image",), flip: bool = False) -> Callable:
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


def _eval_loader(dataset: Dataset, transform: Callable, cfg: dict[str, Any]) -> DataLoader:
    return DataLoader(_Mapped(dataset, transform), batch_size=int(cfg["optim"]["batch_size"]), shuffle=False,
                      num_workers=int(cfg["run"]["num_workers"]))


def _synthetic_sizes(cfg: dict[str, Any], task: str) -> tuple[int, int]:
    from mimlens.tasks.data import DEFAULT_SYNTHETIC, synthetic_count

    num = synthetic_count(str(cfg["data"]["source"])) or DEFAULT_SYNTHETIC
    if _eval_split(cfg) == "train":
        return num, num
    num_eval = cfg["data"]["num_eval"] or (16 if task == "track" else 256)
    return num, int(num_eval)


def _eval_split(cfg: dict[str, Any]) -> str:
    split = cfg["data"]["eval_split"]
    if split not in ("val", "train"):
        raise MimlensError(f"data.eval_split must be 'val' or 'train', got {split!r}")
    return split


def setup_classification(cfg: dict[str, Any], encoder, prep: dict[str, Any], linear: bool) -> TaskSetup:
    from mimlens.tasks.backbone import pooled_features
    from mimlens.tasks.classification import Classifier, LinearProbe, cross_entropy, evaluate_classification
    from mimlens.tasks.data import classification_set
    from mimlens.tasks.objective import TaskObjective

    section = cfg["linear" if linear else "cls"]
    source, seed, difficulty = str(cfg["data"]["source"]), int(cfg["train"]["seed"]), cfg["data"]["synthetic"]
    num, num_eval = _synthetic_sizes(cfg, "cls")
    size = _square(prep["img_size"])
    train_set = classification_set(source, "train", size, seed, num, difficulty, section["label"])
    eval_set = classification_set(source, _eval_split(cfg), size, seed, num_eval, difficulty, section["label"])
    num_classes = _num_classes(train_set, section["label"])
    if linear:
        with torch.no_grad():
            dim = pooled_features(encoder.eval(), torch.zeros(2, 3, size, size), section["block"],
                                  section["pool"]).shape[1]
        model = LinearProbe(encoder, num_classes, dim, section["block"], section["pool"])
        loss = cross_entropy(section["label"])
    else:
        model = Classifier(encoder, num_classes)
        loss = cross_entropy(section["label"], float(section["label_smoothing"]))
    mean, std = prep["mean"], prep["std"]

    def evaluate():
        acc = evaluate_classification(model, _eval_loader(eval_set, _normalizer(mean, std), cfg), section["label"])
        variant = {"metric": "top-k accuracy over the evaluation images (top-k only for k <= classes)",
                   "label": section["label"], "num_classes": num_classes, "num_images": int(acc.sums["images"])}
        if linear:
            where = "the final output" if section["block"] is None else f"block {section['block']} (0-based)"
            pooled = "CLS token" if section["pool"] == "cls" else "mean of the patch tokens"
            variant["probe"] = f"BatchNorm1d without affine + linear on the frozen backbone; {where}, {pooled}"
        else:
            variant["fine_tune"] = (f"full, layer-wise lr decay {cfg['optim']['layer_decay']}, drop path "
                                    f"{section['drop_path']}, label smoothing {section['label_smoothing']}")
        return acc.compute(), variant

    return TaskSetup(TaskObjective(model, loss), train_set, _normalizer(mean, std, flip=not linear), evaluate)


def _num_classes(dataset: Dataset, label: str) -> int:
    attr = "num_fine_classes" if label == "fine_label" else "num_classes"
    count = int(getattr(dataset, attr, 0) or 0)
    if count < 2:
        raise MimlensError(f"the training data has no class count for label {label!r}")
    return count


def _square(size) -> int:
    if not isinstance(size, int):
        raise MimlensError(f"fine-tuning needs a square input; the model expects {size}")
    return size


def setup_depth(cfg: dict[str, Any], encoder, prep: dict[str, Any]) -> TaskSetup:
    from mimlens.tasks.data import depth_set
    from mimlens.tasks.depth import DepthMetrics, DepthModel, silog_loss
    from mimlens.tasks.objective import TaskObjective

    section = cfg["depth"]
    source, seed, difficulty = str(cfg["data"]["source"]), int(cfg["train"]["seed"]), cfg["data"]["synthetic"]
    num, num_eval = _synthetic_sizes(cfg, "depth")
    size = (_square(prep["img_size"]),) * 2
    train_set = depth_set(source, "train", size, seed, num, difficulty)
    eval_set = depth_set(source, _eval_split(cfg), size, seed, num_eval, difficulty)
    lo, hi = float(section["min_depth"]), float(section["max_depth"])
    model = DepthModel(encoder, size, hi, int(section["channels"]), int(section["num_deconv"]))

    def loss(model, batch):
        gt = batch["depth"]
        pred = model(batch["image"], gt.shape[-2:])
        return {"loss": silog_loss(pred, gt, (gt > lo) & (gt < hi))}

    def evaluate():
        metrics = DepthMetrics(lo, hi, section["crop"])
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            for batch in _eval_loader(eval_set, _normalizer(prep["mean"], prep["std"]), cfg):
                gt = batch["depth"]
                metrics.update(model(batch["image"].to(device), gt.shape[-2:]).cpu(), gt)
        return metrics.compute(), metrics.variant()

    transform = _normalizer(prep["mean"], prep["std"], flip=True)
    return TaskSetup(TaskObjective(model, loss), train_set, transform, evaluate)


def setup_pose(cfg: dict[str, Any], encoder, prep: dict[str, Any]) -> TaskSetup:
    from mimlens.tasks.data import pose_set
    from mimlens.tasks.objective import TaskObjective
    from mimlens.tasks.pose import CocoKeypointCrops, PoseModel, coco_keypoint_eval, heatmap_loss, keypoint_sigmas
    from mimlens.tasks.pose import predict as predict_keypoints

    section = cfg["pose"]
    source, seed, difficulty = str(cfg["data"]["source"]), int(cfg["train"]["seed"]), cfg["data"]["synthetic"]
    num, num_eval = _synthetic_sizes(cfg, "pose")
    size = _square(prep["img_size"])
    train_coco, train_load, _ = pose_set(source, "train", size, seed, num, difficulty)
    eval_coco, eval_load, _ = pose_set(source, _eval_split(cfg), size, seed, num_eval, difficulty)
    num_keypoints = len(train_coco.loadCats(train_coco.getCatIds())[0]["keypoints"])
    model = PoseModel(encoder, num_keypoints, (size, size), int(section["channels"]))
    heatmap_size = model.heatmap_size
    sigma = float(section["sigma"] or max(1.0, 2.0 * heatmap_size[0] / 64))  # 2 px on a 64-px-high heatmap
    train_set = CocoKeypointCrops(train_coco, None, (size, size), heatmap_size, sigma, load=train_load)
    eval_set = CocoKeypointCrops(eval_coco, None, (size, size), heatmap_size, sigma, require_keypoints=False,
                                 load=eval_load)
    sigmas = keypoint_sigmas(eval_coco, section["oks_sigmas"])

    def loss(model, batch):
        return {"loss": heatmap_loss(model(batch["image"]), batch["target"], batch["weight"])}

    def evaluate():
        flip_pairs = eval_set.flip_pairs() if section["flip_test"] else None
        loader = _eval_loader(eval_set, _normalizer(prep["mean"], prep["std"]), cfg)
        results = predict_keypoints(model, loader, flip_pairs)
        variant = {
            "metric": "COCO keypoint AP/AR over OKS 0.50:0.95, pycocotools COCOeval(iouType='keypoints')",
            "boxes": "ground-truth person boxes (top-down crops, box grown to the input aspect and scaled 1.25)",
            "oks_sigmas": [float(s) for s in sigmas],
            "flip_test": flip_pairs is not None,
            "heatmap": f"{heatmap_size[0]}x{heatmap_size[1]}, Gaussian sigma {sigma:g} px, MSE weighted by "
                       "visibility",
            "num_instances": len(results),
        }
        return coco_keypoint_eval(eval_coco, results, sigmas), variant

    return TaskSetup(TaskObjective(model, loss), train_set, _normalizer(prep["mean"], prep["std"]), evaluate)


def setup_tracking(cfg: dict[str, Any], encoder, prep: dict[str, Any]) -> TaskSetup:
    from mimlens.tasks.data import tracking_sequences
    from mimlens.tasks.objective import TaskObjective
    from mimlens.tasks.tracking import OneStreamTracker, TrackingMetrics, TrackingPairs, track_sequence, tracking_loss

    section = cfg["track"]
    source, seed, difficulty = str(cfg["data"]["source"]), int(cfg["train"]["seed"]), cfg["data"]["synthetic"]
    num, num_eval = _synthetic_sizes(cfg, "track")
    size = _square(prep["img_size"])
    search = int(section["search_size"] or size)
    template = int(section["template_size"] or search // 2)
    length = int(section["sequence_length"])
    model = OneStreamTracker(encoder, template, search, int(section["head_channels"]))
    train_seqs = tracking_sequences(source, "train", size, seed, num, length, difficulty)
    eval_seqs = tracking_sequences(source, _eval_split(cfg), size, seed, num_eval, length, difficulty)
    tf, sf = float(section["template_factor"]), float(section["search_factor"])
    pairs = TrackingPairs(train_seqs, template, search, length=sum(len(s.boxes) for s in train_seqs),
                          template_factor=tf, search_factor=sf, max_gap=int(section["max_gap"]))

    def loss(model, batch):
        total, parts = tracking_loss(model(batch["template"], batch["search"]), batch["box"])
        return {"loss": total, **{k: torch.tensor(v) for k, v in parts.items()}}

    def evaluate():
        metrics = TrackingMetrics()
        for seq in eval_seqs:
            metrics.update(track_sequence(model, seq, prep["mean"], prep["std"], tf, sf), seq.boxes, seq.visible)
        variant = metrics.variant()
        variant["crops"] = f"template {template} px ({tf:g}x the box), search {search} px ({sf:g}x the box)"
        return metrics.compute(), variant

    transform = _normalizer(prep["mean"], prep["std"], keys=("template", "search"))
    return TaskSetup(TaskObjective(model, loss), pairs, transform, evaluate)


# ---------------------------------------------------------------------------------------------- runs


def load_backbone(cfg: dict[str, Any]):
    """(encoder, info, model section) for ``cfg["init"]`` with ``drop_last`` blocks removed."""
    from mimlens.models import PRESETS, drop_last_blocks, load_model

    overrides = dict(cfg["model"]["kwargs"])
    if cfg["task"] == "cls" and cfg["cls"]["drop_path"]:
        overrides["drop_path_rate"] = float(cfg["cls"]["drop_path"])
    encoder, info = load_model(str(cfg["init"]), cfg["arch"], **overrides)
    drop_last_blocks(encoder, int(cfg["drop_last"]))
    if "run" in info:
        name, kwargs = info["run"]["name"], {**info["run"]["kwargs"], **cfg["model"]["kwargs"]}
    else:
        arch = cfg["arch"] or str(cfg["init"])
        name = arch if arch in PRESETS or arch.startswith("timm:") else f"timm:{arch}"
        kwargs = dict(cfg["model"]["kwargs"])
    return encoder, info, {"name": name, "kwargs": {**kwargs, **_depth_kwargs(encoder, int(cfg["drop_last"]))}}


def _depth_kwargs(encoder, dropped: int) -> dict[str, Any]:
    """timm keywords that rebuild a backbone with its last blocks dropped (empty when none were)."""
    if not dropped:
        return {}
    if hasattr(encoder, "layers"):
        depths = [len(stage.blocks) for stage in encoder.layers]
        heads = [stage.blocks[0].attn.num_heads for stage in encoder.layers]
        return {"depths": depths, "num_heads": heads}
    return {"depth": len(encoder.blocks)}


def default_layer_decay(encoder) -> float:
    return 0.9 if hasattr(encoder, "layers") else 0.65


SETUPS = {
    "cls": lambda cfg, enc, prep: setup_classification(cfg, enc, prep, linear=False),
    "linear": lambda cfg, enc, prep: setup_classification(cfg, enc, prep, linear=True),
    "depth": setup_depth,
    "pose": setup_pose,
    "track": setup_tracking,
}


def finetune(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """One fine-tuning run (or a drop sweep when ``cfg["sweep_drop"]`` is set); returns ``metrics.json``."""
    if cfg["sweep_drop"]:
        return sweep_drop(cfg, run_dir)
    from mimlens.engine import seed_everything
    from mimlens.models import preprocessing
    from mimlens.tasks.fit import fit

    run_dir = Path(run_dir)
    cfg = copy.deepcopy(cfg)
    seed_everything(int(cfg["train"]["seed"]))
    encoder, info, model_section = load_backbone(cfg)
    if cfg["optim"]["layer_decay"] is None:
        cfg["optim"]["layer_decay"] = default_layer_decay(encoder)
    prep = preprocessing(encoder)
    setup = SETUPS[cfg["task"]](cfg, encoder, prep)
    cfg["model"] = model_section
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    trained = cfg["train"]["steps"] != 0
    summary = fit(setup.objective, setup.train_set, setup.transform, cfg, run_dir) if trained else {"step": 0}
    train_seconds = time.perf_counter() - start
    save_config(cfg, run_dir)
    start = time.perf_counter()
    metrics, variant = setup.evaluate()
    variant["eval_split"] = _eval_split(cfg)
    name, higher = PRIMARY[cfg["task"]]
    result = {
        "task": cfg["task"],
        "init": str(cfg["init"]),
        "init_format": info.get("format"),
        "model": model_section["name"],
        "drop_last": int(cfg["drop_last"]),
        "primary": {"name": name, "value": metrics[name], "higher_is_better": higher},
        "metrics": metrics,
        "variant": variant,
        "train": {"steps": summary["step"], "warmup_steps": summary.get("warmup_steps"),
                  "final_loss": summary.get("loss"), "seconds": round(train_seconds, 2), "lr": cfg["optim"]["lr"],
                  "layer_decay": cfg["optim"]["layer_decay"]},
        "eval_seconds": round(time.perf_counter() - start, 2),
    }
    save_json(result, run_dir / "metrics.json")
    return result


def sweep_drop(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """One run per K in ``sweep_drop`` (``RUN/drop_<K>``), then ``drop_sweep.json`` and the figure."""
    run_dir = Path(run_dir)
    rows, results = [], []
    for k in [int(v) for v in cfg["sweep_drop"]]:
        sub = copy.deepcopy(cfg)
        sub["sweep_drop"], sub["drop_last"] = None, k
        result = finetune(sub, run_dir / f"drop_{k}")
        results.append(result)
        rows.append({"drop_last": k, **{m: v for m, v in result["metrics"].items() if not isinstance(v, list)}})
    name, higher = PRIMARY[cfg["task"]]
    sweep = {"task": cfg["task"], "init": str(cfg["init"]), "metric": name, "higher_is_better": higher,
             "variant": results[0]["variant"], "rows": rows}
    save_json(sweep, run_dir / "drop_sweep.json")
    save_config(cfg, run_dir)
    save_json({"task": cfg["task"], "init": str(cfg["init"]), "primary": {"name": name, "higher_is_better": higher},
               "drop_sweep": [{"drop_last": r["drop_last"], name: r[name]} for r in rows],
               "variant": results[0]["variant"]}, run_dir / "metrics.json")
    from mimlens.tasks.figures import layer_drop_figure

    layer_drop_figure(sweep, run_dir / "figures" / "layer_drop.png")
    return sweep
