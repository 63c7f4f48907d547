"""One detection fine-tuning run (``mimlens finetune det``): load the backbone, drop its last blocks, put a
Faster R-CNN on it, fine-tune, evaluate box AP with pycocotools, write the run directory.

The config is a plain nested dict (:data:`DEFAULTS` ← ``--config`` YAML ← flags), laid out like the other
fine-tuning tasks' (:mod:`mimlens.tasks.run`) and trained by the same loop (:func:`mimlens.tasks.fit.fit`:
AdamW, ``lr = base_lr × batch_size / 256``, warm-up + cosine, layer-wise lr decay 0.65 ViT / 0.9 Swin by
default). The ``det`` section holds the detector's settings (:func:`~mimlens.tasks.detection.build_detector`).

Run directory: ``config.yaml`` (with the ``model`` section ``load_model(RUN)`` rebuilds the fine-tuned
backbone from), ``log.jsonl`` (``loss`` and its four parts ``loss_objectness``, ``loss_rpn_box_reg``,
``loss_classifier``, ``loss_box_reg``), ``backbone.safetensors``, ``metrics.json`` (AP, AP50, AP75, APs,
APm, APl with the metric variant), ``detections_val.json`` (COCO results), ``figures/det_loss_curves.png``
and, for synthetic data, ``data/`` (the scenes written by the COCO instances exporter: ``annotations/
instances_{train,val}.json`` and the PNG images, which the run reads back like any COCO folder).

This module imports only the standard library at import time, so a command line can add its flags cheaply.
"""

from __future__ import annotations

import argparse
import copy
import re
import time
from pathlib import Path
from typing import Any

__all__ = ["DEFAULTS", "add_det_arguments", "export_synthetic", "finetune_det", "resolve_det_config", "run_det"]

DEFAULTS: dict[str, Any] = {
    "task": "det",
    "init": "vit-tiny-64",  # MODEL: preset, timm:NAME, checkpoint file (with arch) or run directory
    "arch": None,
    "model": {"name": None, "kwargs": {}},  # kwargs: build_model overrides; name: filled in
    "drop_last": 0,
    "data": {
        "source": "synthetic:2048",  # synthetic[:N] (N training scenes) or a COCO-style folder
        "num_eval": None,  # synthetic evaluation scenes (default 256)
        "synthetic": {"num_objects": [1, 3], "background_strength": 0.5},
    },
    "det": {
        "channels": 64,  # width of every pyramid level
        # ViT simple pyramid: strides patch/2 … 2·patch (+4·patch for the RPN). ViTDet's full set adds 4.0
        # (stride patch/4), which at 64 px with patch 8 is a stride-2 map that triples a CPU step's cost
        "scales": [2.0, 1.0, 0.5],
        "anchor_scale": 4.0,  # anchor side = anchor_scale × level stride
        "aspect_ratios": [0.5, 1.0, 2.0],
        "proposals": 300,
        "rois_per_image": 64,
        "box_head_dim": 256,
        "score_thresh": 0.05,
        "detections_per_img": 100,
        "max_objects": 100,  # ground-truth boxes per training image (more is an error)
        "flip": True,
    },
    "optim": {
        "base_lr": 0.02,  # lr = base_lr × batch_size / 256 (1.25e-3 at batch 16)
        "batch_size": 16,
        "weight_decay": 0.05,
        "layer_decay": None,  # None: 0.65 ViT family, 0.9 Swin
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "warmup_steps": 20,
        "warmup_lr": 1e-6,
        "min_lr": 1e-6,
        "clip_grad": 5.0,
        "lr": None,  # filled in
    },
    "train": {"epochs": None, "steps": 300, "seed": 0, "log_every": 10},
    "run": {"out": None, "device": "auto", "num_workers": 0, "progress": True},
}

NUM_EVAL = 256


def resolve_det_config(config_path: str | Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS ← YAML ← flags (dotted keys; None = not given). ``model.kwargs`` takes any timm keyword; a
    YAML or flag that sets ``train.steps`` clears ``train.epochs`` and vice versa."""
    from mimlens.config import load_yaml, resolve
    from mimlens.errors import MimlensError

    layer = load_yaml(config_path) if config_path is not None else {}
    defaults = copy.deepcopy(DEFAULTS)
    kwargs = (layer.get("model") or {}).get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise MimlensError(f"{config_path}: model.kwargs must be a mapping, got {type(kwargs).__name__}")
    defaults["model"]["kwargs"] = dict(kwargs)
    cfg = resolve(defaults, config_path, flags)
    if cfg["task"] != "det":
        raise MimlensError(f"a detection config has task 'det', got {cfg['task']!r}")
    for given in (layer.get("train") or {}, {k.split(".")[1]: v for k, v in flags.items()
                                             if k.startswith("train.") and v is not None}):
        if given.get("steps") is not None and given.get("epochs") is None:
            cfg["train"]["epochs"] = None
        if given.get("epochs") is not None and given.get("steps") is None:
            cfg["train"]["steps"] = None
    return cfg


def finetune_det(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """One detection run as ``cfg`` says (``train.steps`` 0 evaluates the start point); returns ``metrics.json``."""
    import torch

    from mimlens.config import save_config
    from mimlens.engine import seed_everything
    from mimlens.errors import MimlensError
    from mimlens.io import save_json
    from mimlens.models import preprocessing
    from mimlens.tasks.data import synthetic_count
    from mimlens.tasks.detection import DetectionObjective, build_detector
    from mimlens.tasks.detection_data import DetectionTransform, detection_set
    from mimlens.tasks.detection_eval import coco_bbox_eval, predict
    from mimlens.tasks.detection_figures import loss_curves
    from mimlens.tasks.fit import fit
    from mimlens.tasks.run import default_layer_decay, load_backbone

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    seed = int(cfg["train"]["seed"])
    seed_everything(seed)
    encoder, info, model_section = load_backbone(cfg)
    if cfg["optim"]["layer_decay"] is None:
        cfg["optim"]["layer_decay"] = default_layer_decay(encoder)
    prep = preprocessing(encoder)
    size = prep["img_size"]
    if not isinstance(size, int):
        raise MimlensError(f"detection needs a square model input; the model expects {size}")
    source, det = str(cfg["data"]["source"]), cfg["det"]
    root, num_train = Path(source), synthetic_count(source)
    if num_train is not None:
        root = export_synthetic(num_train, int(cfg["data"]["num_eval"] or NUM_EVAL), size, seed,
                                cfg["data"]["synthetic"], run_dir / "data")
    train_set = detection_set(root, "train")
    eval_set = detection_set(root, "val", category_ids=train_set.category_ids)
    detector = build_detector(
        encoder, train_set.num_classes, size, prep["mean"], prep["std"], out_channels=int(det["channels"]),
        scales=tuple(float(s) for s in det["scales"]), anchor_scale=float(det["anchor_scale"]),
        aspect_ratios=tuple(float(r) for r in det["aspect_ratios"]), proposals=int(det["proposals"]),
        rois_per_image=int(det["rois_per_image"]), box_head_dim=int(det["box_head_dim"]),
        score_thresh=float(det["score_thresh"]), detections_per_img=int(det["detections_per_img"]))
    objective = DetectionObjective(detector)
    transform = DetectionTransform(size, prep["mean"], int(det["max_objects"]), bool(det["flip"]))
    cfg["model"] = model_section

    start = time.perf_counter()
    trained = cfg["train"]["steps"] != 0
    summary = fit(objective, train_set, transform, cfg, run_dir) if trained else {"step": 0}
    train_seconds = time.perf_counter() - start
    save_config(cfg, run_dir)

    start = time.perf_counter()
    device = cfg["run"]["device"]
    detector.to(torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device))
    results = predict(detector, eval_set, size, prep["mean"], int(cfg["optim"]["batch_size"]),
                      int(cfg["run"]["num_workers"]))
    metrics = coco_bbox_eval(eval_set.coco, results)
    save_json(results, run_dir / "detections_val.json")
    if trained:
        loss_curves([run_dir], run_dir / "figures" / "det_loss_curves.png")
    result = {
        "task": "det",
        "init": str(cfg["init"]),
        "init_format": info.get("format"),
        "model": model_section["name"],
        "drop_last": int(cfg["drop_last"]),
        "primary": {"name": "ap", "value": metrics["ap"], "higher_is_better": True},
        "metrics": metrics,
        "variant": _variant(detector, eval_set, results, size),
        "train": {"steps": summary["step"], "final_loss": summary.get("loss"), "seconds": round(train_seconds, 2),
                  "lr": cfg["optim"]["lr"], "layer_decay": cfg["optim"]["layer_decay"]},
        "eval_seconds": round(time.perf_counter() - start, 2),
    }
    save_json(result, run_dir / "metrics.json")
    return result


def export_synthetic(num_train: int, num_eval: int, img_size: int, seed: int, difficulty: dict[str, Any],
                     out_dir: str | Path) -> Path:
    """Synthetic scenes as a COCO instances folder: ``num_train`` of the train split and ``num_eval`` of the
    (disjoint) val split, through ``mimlens.data.export.export_coco_instances``; returns ``out_dir``."""
    from mimlens.data.export import export_coco_instances
    from mimlens.data.synthetic import SyntheticScenes

    for split, num in (("train", num_train), ("val", num_eval)):
        scenes = SyntheticScenes(num, img_size, seed, split=split, **difficulty)
        export_coco_instances(scenes, out_dir, split=split, masks=False)
    return Path(out_dir)


def _variant(detector, eval_set, results: list[dict], size: int) -> dict[str, Any]:
    from mimlens.tasks.detection import SimpleFeaturePyramid
    from mimlens.tasks.detection_eval import METRIC_VARIANT

    pyramid = detector.backbone
    kind = "simple feature pyramid (ViTDet)" if isinstance(pyramid, SimpleFeaturePyramid) else "stage FPN"
    sizes = [float(s[0]) for s in detector.rpn.anchor_generator.sizes]
    return {
        "metric": METRIC_VARIANT,
        "values": "fractions in [0, 1] (x100 for COCO's percentages); null where an area range has no ground truth",
        "detector": f"torchvision Faster R-CNN, {kind}, strides {list(pyramid.strides.values())}, anchors {sizes} "
                    "px at aspect ratios " + str(list(detector.rpn.anchor_generator.aspect_ratios[0])),
        "input": f"letterboxed to {size}x{size} px; boxes scored in original image pixels",
        "num_images": len(eval_set),
        "num_instances": len(eval_set.coco.getAnnIds()),
        "num_detections": len(results),
    }


def add_det_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``mimlens finetune det``: the same names as the other fine-tuning tasks' flags."""
    parser.add_argument("--init", help="MODEL to start from: run directory, checkpoint file (with --arch), preset "
                                       "or timm:NAME (random init); default vit-tiny-64")
    parser.add_argument("--arch", help="the preset or timm model a checkpoint file belongs to")
    parser.add_argument("--data", help="synthetic[:N] (generated scenes, default 2048) or a COCO-style folder "
                                       "(annotations/instances_<split>.json + images; see docs/detection.md)")
    parser.add_argument("--config", help="YAML recipe; flags override it")
    parser.add_argument("--out", help="run directory (default runs/finetune_det_<init>)")
    parser.add_argument("--drop-last", type=int, help="remove the last K blocks before fine-tuning")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="run length in epochs")
    length.add_argument("--steps", type=int, help="run length in optimizer updates (0: evaluate the start point)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="base learning rate for a batch of 256; lr = base × batch / 256")
    parser.add_argument("--layer-decay", type=float, help="layer-wise lr decay (default 0.65 ViT, 0.9 Swin)")
    parser.add_argument("--num-eval", type=int, help="synthetic evaluation scenes (default 256)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, help="data-loading worker processes")
    parser.add_argument("--device", help="auto (default), cpu, cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_det(args: argparse.Namespace) -> int:
    """Run ``mimlens finetune det`` from parsed flags (those of :func:`add_det_arguments`; a namespace from the
    ``finetune`` command's own parser works too)."""
    from mimlens.errors import MimlensError

    if getattr(args, "sweep_drop", None):
        raise MimlensError("--sweep-drop is not available for det; run one --drop-last K per value")
    flags = {
        "init": args.init,
        "arch": args.arch,
        "data.source": args.data,
        "data.num_eval": args.num_eval,
        "drop_last": args.drop_last,
        "train.epochs": args.epochs,
        "train.steps": args.steps,
        "train.seed": args.seed,
        "optim.batch_size": args.batch_size,
        "optim.base_lr": args.lr,
        "optim.layer_decay": args.layer_decay,
        "run.device": args.device,
        "run.num_workers": args.workers,
        "run.out": args.out,
        "run.progress": False if args.no_progress else None,
    }
    cfg = resolve_det_config(args.config, flags)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(cfg["init"]).removeprefix("timm:")).name)
    out = Path(cfg["run"]["out"] or Path("runs") / f"finetune_det_{slug}")
    cfg["run"]["out"] = str(out)
    result = finetune_det(cfg, out)
    print(f"finetune det: ap {result['metrics']['ap']:.4g} (ap50 {result['metrics']['ap50']:.4g}) after "
          f"{result['train']['steps']} steps: {out}")
    return 0
