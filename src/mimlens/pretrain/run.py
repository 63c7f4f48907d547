"""One pre-training run from a config: build the backbone, the data and the objective, train, export.

The config is a plain nested dict (:func:`defaults` ← ``--config`` YAML ← command-line flags). Sections:
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
from mimlens.pretrain.registry import OBJECTIVES, objective

DEFAULTS: dict[str, Any] = {
    "objective": "simmim",
    "model": {"name": DEFAULT_PRESET, "kwargs": {"img_size": None, "pos_embed": None, "drop_path_rate": None}},
    "data": {
        "source": "synthetic:4096",  # synthetic[:N], photos[:N] or an image folder (ImageFolder tree or flat)
        "crop_scale": None,  # random resized crop area range; None: the objective's (SimMIM 0.67–1, others 0.08–1)
        "synthetic": {"num_objects": None, "background": None, "background_strength": None},  # None: data default
    },
}
# The pre-training recipe: the engine's defaults (mimlens.engine.settings) with these changes.
DEFAULTS.update(merge(engine_defaults(), {"optim": {"min_lr": 1e-5}, "train": {"steps": 1000}}))


def defaults() -> dict[str, Any]:
    """:data:`DEFAULTS` with one section per registered objective (:mod:`mimlens.pretrain.registry`), after
    ``data`` as a saved ``config.yaml`` lists them."""
    shared = copy.deepcopy(DEFAULTS)
    first = {key: shared.pop(key) for key in ("objective", "model", "data")}
    return {**first, **{name: copy.deepcopy(o.section) for name, o in OBJECTIVES.items()}, **shared}


def resolve_config(config_path: str | Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS ← YAML ← flags (dotted keys, None = not given); ``model.kwargs`` accepts any timm keyword.

    A length in steps and the same length in epochs exclude each other (:func:`mimlens.config.resolve`).
    """
    cfg = resolve(defaults(), config_path, flags)
    cfg["model"]["kwargs"] = {k: v for k, v in cfg["model"]["kwargs"].items() if v is not None}
    objective(cfg["objective"])  # an unknown name is one line naming the registered ones
    return cfg


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
    """A copy of ``cfg`` with what the data and the backbone decide filled in: the objective's own fields (its
    ``resolve``: SimMIM's mask patch, the supervised class count) and ``data.crop_scale``."""
    cfg = copy.deepcopy(cfg)
    entry = objective(cfg["objective"])
    fill = entry.resolve_function()
    if fill is not None:
        fill(cfg, encoder, dataset)
    cfg["data"]["crop_scale"] = list(cfg["data"]["crop_scale"] or entry.crop_scale)
    return cfg


def build_objective(cfg: dict[str, Any], encoder):
    """The objective of a resolved ``cfg`` around ``encoder``."""
    return objective(cfg["objective"]).build_function()(encoder, cfg)


def pretrain(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """Train ``cfg["objective"]`` and write the run directory; returns the engine's summary.

    Writes ``config.yaml``, ``log.jsonl``, ``checkpoints/last.pt``, ``backbone.safetensors`` and what the
    objective's ``finish`` adds (SimMIM: ``figures/simmim_reconstruction.png``). Rerunning with the same config
    resumes from the last checkpoint.
    """
    from mimlens.data.folders import skipped_message
    from mimlens.engine import seed_everything, train
    from mimlens.models import build_model, preprocessing

    run_dir = Path(run_dir)
    device = cfg.get("run", {}).get("device", "auto")
    distributed.init(None if device == "auto" else device)  # before the data: one process lists a folder for all
    seed_everything(int(cfg["train"]["seed"]))  # the same initialisation in every process
    encoder = build_model(cfg["model"]["name"], **cfg["model"]["kwargs"])
    img_size = preprocessing(encoder)["img_size"]
    if not isinstance(img_size, int):
        raise MimlensError(f"pre-training needs a square input, {cfg['model']['name']} expects {img_size}")
    dataset = build_dataset(cfg, img_size)
    cfg = resolve_objective(cfg, encoder, dataset)
    model = build_objective(cfg, encoder)
    transform = model.transform(img_size, cfg["data"]["crop_scale"])
    summary = train(model, dataset, transform, cfg, run_dir)
    skipped = skipped_message(dataset)  # every process and DataLoader worker of the run, once
    if skipped and distributed.is_main():
        print(skipped, flush=True)
    finish = objective(cfg["objective"]).finish_function()
    if summary["finished"] and finish is not None and distributed.is_main():
        finish(model, dataset, transform, cfg, run_dir)
    return summary
