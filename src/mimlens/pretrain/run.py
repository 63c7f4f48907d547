"""One pre-training run from a config: build the backbone, the data and the objective, train, export.

The config is a plain nested dict (:data:`DEFAULTS` ← ``--config`` YAML ← command-line flags). Sections:
``objective``; ``model: {name, kwargs}`` (``build_model(name, **kwargs)`` rebuilds the backbone, the section
``load_model(RUN)`` reads); ``data``; one section per objective; ``optim``, ``train`` and ``run`` for
:func:`mimlens.engine.train`. Learning rate: ``optim.base_lr`` is for a global batch of 256 and the run uses
``optim.lr = base_lr × optim.batch_size / 256`` (filled in and saved in ``config.yaml``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from mimlens import distributed
from mimlens.config import merge, resolve
from mimlens.engine.settings import engine_defaults
from mimlens.errors import MimlensError
from mimlens.model_names import DEFAULT_PRESET

DEFAULTS: dict[str, Any] = {
    "objective": "simmim",
    "model": {"name": DEFAULT_PRESET, "kwargs": {"img_size": None, "pos_embed": None, "drop_path_rate": None}},
    "data": {
        "source": "synthetic:4096",  # synthetic[:N], photos[:N] or an image folder (ImageFolder tree or flat)
        "crop_scale": None,  # random resized crop area range; None: the objective's (SimMIM 0.67–1, others 0.08–1)
        "synthetic": {"num_objects": None, "background": None, "background_strength": None},  # None: data default
    },
    "simmim": {"mask_ratio": 0.6, "mask_patch": None},  # mask_patch None: 32 px at 224, scaled with the image
    "supervised": {"num_classes": None, "label_smoothing": 0.1, "mixup": 0.0, "cutmix": 0.0},
    "moco": {"dim": 256, "mlp_dim": 4096, "temperature": 0.2, "momentum": 0.99, "freeze_patch_embed": True},
}
# The pre-training recipe: the engine's defaults (mimlens.engine.settings) with these changes.
DEFAULTS.update(merge(engine_defaults(), {"optim": {"min_lr": 1e-5}, "train": {"steps": 1000}}))

DEFAULT_CROP_SCALE = {"simmim": [0.67, 1.0], "supervised": [0.08, 1.0], "moco": [0.08, 1.0]}


def resolve_config(config_path: str | Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS ← YAML ← flags (dotted keys, None = not given); ``model.kwargs`` accepts any timm keyword.

    A length in steps and the same length in epochs exclude each other (:func:`mimlens.config.resolve`).
    """
    cfg = resolve(DEFAULTS, config_path, flags)
    cfg["model"]["kwargs"] = {k: v for k, v in cfg["model"]["kwargs"].items() if v is not None}
    if cfg["objective"] not in DEFAULT_CROP_SCALE:
        raise MimlensError(f"objective must be one of {', '.join(DEFAULT_CROP_SCALE)}, got {cfg['objective']!r}")
    return cfg


def scaled_mask_patch(img_size: int, token_size: int) -> int:
    """SimMIM's 32 px mask patch at 224 px, scaled to ``img_size``: the multiple of the token size nearest to
    ``32 × img_size / 224`` that divides the image side (224 px → 32; 64 px → 8; 192 px, tokens of 4 → 24).

    The official 192 px Swin recipes keep 32 px; recipes set ``simmim.mask_patch`` explicitly."""
    target = 32 * img_size / 224
    candidates = [p for p in range(token_size, img_size + 1, token_size) if img_size % p == 0]
    return min(candidates, key=lambda p: (abs(p - target), -p))


def build_dataset(cfg: dict[str, Any], img_size: int):
    """``data.source`` through :func:`mimlens.data.build_dataset`: generated sets at ``img_size`` (with the
    ``data.synthetic`` difficulty), image folders as full-size float images (the objective crops them)."""
    from torchvision.transforms import v2

    from mimlens.data import build_dataset as build

    source, seed = str(cfg["data"]["source"]), int(cfg["train"]["seed"])
    if source.split(":")[0] == "synthetic":
        return build(source, img_size=img_size, seed=seed, **cfg["data"]["synthetic"])
    if source.split(":")[0] == "photos":
        return build(source, img_size=img_size, seed=seed)
    full_image = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()])
    return build(source, img_size=img_size, seed=seed, transform=full_image)


def resolve_objective(cfg: dict[str, Any], encoder, dataset) -> dict[str, Any]:
    """A copy of ``cfg`` with what the data and the backbone decide filled in: ``supervised.num_classes`` (the
    data set's class count), ``simmim.mask_patch`` (SimMIM's 32 px at 224, scaled) and ``data.crop_scale``."""
    cfg = copy.deepcopy(cfg)
    if cfg["objective"] == "supervised" and getattr(dataset, "classes", None) == []:
        raise MimlensError(f"data {cfg['data']['source']!r} is a flat folder of images without class labels: "
                           "supervised pre-training needs a tree DIR/<class>/*.jpg (ImageFolder layout); SimMIM "
                           "and MoCo v3 pre-train on flat folders")
    if cfg["objective"] == "supervised" and cfg["supervised"]["num_classes"] is None:
        num_classes = int(getattr(dataset, "num_classes", 0) or 0)
        if num_classes < 2:
            raise MimlensError(f"data {cfg['data']['source']!r} has no class count; set supervised.num_classes")
        cfg["supervised"]["num_classes"] = num_classes
    if cfg["objective"] == "simmim" and cfg["simmim"]["mask_patch"] is None:
        img_size = int(encoder.patch_embed.img_size[0])
        cfg["simmim"]["mask_patch"] = scaled_mask_patch(img_size, int(encoder.patch_embed.patch_size[0]))
    cfg["data"]["crop_scale"] = list(cfg["data"]["crop_scale"] or DEFAULT_CROP_SCALE[cfg["objective"]])
    return cfg


def build_objective(cfg: dict[str, Any], encoder):
    """The objective of a resolved ``cfg`` around ``encoder``; supervised gets a classifier."""
    from mimlens.pretrain import OBJECTIVES

    objective = cfg["objective"]
    if objective == "supervised":
        section = cfg["supervised"]
        encoder.reset_classifier(int(section["num_classes"]))
        return OBJECTIVES[objective](encoder, label_smoothing=section["label_smoothing"], mixup=section["mixup"],
                                     cutmix=section["cutmix"])
    if objective == "simmim":
        section = cfg["simmim"]
        return OBJECTIVES[objective](encoder, mask_ratio=section["mask_ratio"], mask_patch=section["mask_patch"])
    return OBJECTIVES[objective](encoder, **cfg["moco"])


def pretrain(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """Train ``cfg["objective"]`` and write the run directory; returns the engine's summary.

    Writes ``config.yaml``, ``log.jsonl``, ``checkpoints/last.pt``, ``backbone.safetensors`` and, for SimMIM,
    ``figures/simmim_reconstruction.png``. Rerunning with the same config resumes from the last checkpoint.
    """
    from mimlens.data.folders import skipped_message
    from mimlens.engine import SeededTransform, seed_everything, train
    from mimlens.models import build_model, preprocessing
    from mimlens.pretrain import save_reconstruction_figure

    run_dir = Path(run_dir)
    seed_everything(int(cfg["train"]["seed"]))  # the same initialisation in every process
    encoder = build_model(cfg["model"]["name"], **cfg["model"]["kwargs"])
    img_size = preprocessing(encoder)["img_size"]
    if not isinstance(img_size, int):
        raise MimlensError(f"pre-training needs a square input, {cfg['model']['name']} expects {img_size}")
    dataset = build_dataset(cfg, img_size)
    skipped = skipped_message(dataset)
    if skipped and distributed.is_main():
        print(skipped, flush=True)
    cfg = resolve_objective(cfg, encoder, dataset)
    objective = build_objective(cfg, encoder)
    transform = objective.transform(img_size, cfg["data"]["crop_scale"])
    summary = train(objective, dataset, transform, cfg, run_dir)
    if summary["finished"] and cfg["objective"] == "simmim" and distributed.is_main():
        samples = SeededTransform(dataset, transform, int(cfg["train"]["seed"]))
        batch = [samples[(0, i)] for i in range(min(4, len(dataset)))]
        device = next(objective.parameters()).device
        images = torch.stack([b["image"] for b in batch]).to(device)
        masks = torch.stack([b["mask"] for b in batch]).to(device)
        save_reconstruction_figure(objective, images, masks, run_dir / "figures" / "simmim_reconstruction.png")
    return summary
