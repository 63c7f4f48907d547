"""Training bars: is a pre-trained model trained enough for its attention to say anything?

- supervised: top-1 accuracy of the pre-trained classifier on validation scenes, against chance (1 / classes);
- SimMIM: masked L1 (normalised pixels, masked pixels only — the training loss) on validation scenes with
  fixed masks, against two fills of the same masked pixels computed from the visible ones alone:
  *nearest fill* (each masked pixel takes the value of the nearest visible pixel, Euclidean, scipy
  ``distance_transform_edt(return_indices=True)``) and *mean fill* (the per-image, per-channel mean of the
  visible pixels). A model that does not beat nearest fill has learned nothing local yet.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from scipy.ndimage import distance_transform_edt

SUPERVISED_BAR = 2.0  # accuracy must reach this multiple of chance


def pixel_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """A token mask ``(B, h, w)`` upsampled to pixels ``(B, size, size)``."""
    scale = size // mask.shape[-1]
    return mask.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def nearest_fill(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``images`` ``(B, C, H, W)`` with every masked pixel (``masks`` ``(B, H, W)``, True = masked) replaced by
    the nearest visible pixel of the same image (ties: scipy's choice); an all-masked image is left as is."""
    out = images.clone()
    for b in range(images.shape[0]):
        masked = masks[b].numpy().astype(bool)
        if masked.all() or not masked.any():
            continue
        _, (rows, cols) = distance_transform_edt(masked, return_indices=True)
        out[b] = images[b][:, torch.from_numpy(rows), torch.from_numpy(cols)]
    return out


def mean_fill(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``images`` with every masked pixel replaced by the per-image, per-channel mean of its visible pixels."""
    visible = (~masks).unsqueeze(1).to(images.dtype)
    mean = (images * visible).sum((-2, -1), keepdim=True) / visible.sum((-2, -1), keepdim=True).clamp_min(1)
    return torch.where(masks.unsqueeze(1), mean.expand_as(images), images)


def masked_l1_mean(prediction: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean |prediction − target| over masked pixels and channels (``masks`` in pixels, ``(B, H, W)``)."""
    weight = masks.unsqueeze(1).to(torch.float64)
    error = (prediction.double() - target.double()).abs() * weight
    return float(error.sum() / (weight.sum() * target.shape[1]).clamp_min(1))


def _load_objective(run_dir: Path):
    """The pre-training objective of a run (backbone and heads) from ``checkpoints/last.pt``, with its config."""
    from mimlens.config import load_yaml
    from mimlens.engine.checkpoint import load_checkpoint
    from mimlens.models import build_model
    from mimlens.pretrain.run import build_objective

    cfg = load_yaml(run_dir / "config.yaml")
    encoder = build_model(cfg["model"]["name"], **(cfg["model"].get("kwargs") or {}))
    objective = build_objective(cfg, encoder)
    objective.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"])
    return objective.eval(), cfg


def _validation_images(cfg: dict[str, Any], encoder, num_images: int) -> dict[str, torch.Tensor]:
    """``num_images`` validation scenes (the split the training never sees) with the run's difficulty,
    normalised with the backbone's mean and std."""
    from mimlens.data import SyntheticScenes
    from mimlens.models import preprocessing
    from mimlens.tasks.images import normalize

    prep = preprocessing(encoder)
    difficulty = cfg["data"].get("synthetic") or {}
    scenes = SyntheticScenes(num_images, prep["img_size"], int(cfg["train"]["seed"]), split="val", **difficulty)
    items = [scenes[i] for i in range(num_images)]
    images = normalize(torch.stack([it["image"] for it in items]), prep["mean"], prep["std"])
    return {"image": images, "label": torch.stack([it["label"] for it in items])}


@torch.no_grad()
def supervised_bar(run_dir: str | Path, num_images: int) -> dict[str, Any]:
    """Top-1 accuracy of a supervised pre-training run's classifier on ``num_images`` validation scenes."""
    objective, cfg = _load_objective(Path(run_dir))
    batch = _validation_images(cfg, objective.encoder, num_images)
    predicted = torch.cat([objective.encoder(x).argmax(1) for x in batch["image"].split(64)])
    accuracy = float((predicted == batch["label"]).double().mean())
    chance = 1.0 / int(cfg["supervised"]["num_classes"])
    return {"top1": accuracy, "chance": chance, "required": SUPERVISED_BAR * chance,
            "passed": accuracy >= SUPERVISED_BAR * chance, "num_images": num_images,
            "rule": f"top-1 on validation scenes >= {SUPERVISED_BAR:g} x chance"}


@torch.no_grad()
def simmim_bar(run_dir: str | Path, num_images: int, seed: int = 0) -> dict[str, Any]:
    """Masked L1 of a SimMIM run on ``num_images`` validation scenes with fixed masks (``seed``), next to the
    nearest-fill and mean-fill baselines on the same masked pixels."""
    from mimlens.pretrain.masking import random_block_masks

    objective, cfg = _load_objective(Path(run_dir))
    batch = _validation_images(cfg, objective.encoder, num_images)
    images = batch["image"]
    size = images.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    tokens = random_block_masks(num_images, size, objective.mask_patch, objective.token_size, objective.mask_ratio,
                                generator)
    pixels = pixel_mask(tokens, size)
    prediction = torch.cat([objective.reconstruct(x, m) for x, m in zip(images.split(64), tokens.split(64),
                                                                         strict=True)])
    loss = masked_l1_mean(prediction, images, pixels)
    nearest = masked_l1_mean(nearest_fill(images, pixels), images, pixels)
    mean = masked_l1_mean(mean_fill(images, pixels), images, pixels)
    return {"masked_l1": loss, "nearest_fill_l1": nearest, "mean_fill_l1": mean,
            "passed": bool(math.isfinite(loss) and loss < nearest), "num_images": num_images,
            "mask": {"ratio": objective.mask_ratio, "mask_patch": objective.mask_patch, "seed": seed},
            "rule": "masked L1 on validation scenes < nearest-visible-pixel fill of the same masked pixels"}


def training_bars(pretrain_dir: str | Path, num_images: int) -> dict[str, Any]:
    """``bars.json``: the supervised and SimMIM bars of the runs ``pretrain_dir/{supervised,simmim}``."""
    pretrain_dir = Path(pretrain_dir)
    return {"supervised": supervised_bar(pretrain_dir / "supervised", num_images),
            "simmim": simmim_bar(pretrain_dir / "simmim", num_images)}

