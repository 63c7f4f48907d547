"""The input contract of the analyses: raw RGB images in [0, 1], each model seeing them through its own preprocessing.

``attention_stats`` and ``cka_matrix`` take the same images: an (N, 3, H, W) float tensor in [0, 1], or an iterable
of such batches (tensors, tuples/lists whose first item is the image tensor, or dicts with an ``"image"`` key).
:func:`model_transform` turns a raw batch into what one model expects: the whole image resized (bicubic,
antialiased, no crop) to the model's input size, then normalised with the model's mean and std, both from
:func:`mimlens.models.preprocessing`. So models with different input sizes or normalisations are measured on the
same image content. Images that are already preprocessed go in with ``transform=torch.nn.Identity()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mimlens.errors import MimlensError

__all__ = ["RAW_TOLERANCE", "batch_images", "batches_of", "model_device", "model_name", "model_transform"]

RAW_TOLERANCE = 1e-3  # how far outside [0, 1] a raw image may stray (resampling overshoot)


def model_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """Where ``model`` runs: ``device`` (the model is moved there), else where its parameters are (CPU without)."""
    if device is not None:
        model.to(device)
        return torch.device(device)
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def model_name(model: nn.Module) -> str:
    """The model's timm architecture name, else its class name."""
    config = getattr(model, "pretrained_cfg", None) or {}
    return config.get("architecture") or type(model).__name__


def model_transform(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The preprocessing of raw RGB batches in [0, 1] for ``model``: resize to its input size, then normalise.

    A batch outside [0, 1] (beyond :data:`RAW_TOLERANCE`) is refused: it is most likely preprocessed already.
    """
    from mimlens.models import preprocessing

    prep = preprocessing(model)
    size = prep["img_size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    mean = torch.tensor(prep["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(prep["std"], dtype=torch.float32).view(1, 3, 1, 1)

    def transform(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise MimlensError(f"images of shape {tuple(x.shape)}: expected raw RGB batches (N, 3, H, W)")
        low, high = float(x.min()), float(x.max())
        if low < -RAW_TOLERANCE or high > 1 + RAW_TOLERANCE:
            raise MimlensError(
                f"images range over [{low:.3g}, {high:.3g}]: the analyses expect raw RGB in [0, 1] and apply each "
                "model's own preprocessing; for images that are already preprocessed pass an identity transform "
                "(torch.nn.Identity())"
            )
        x = x.float()
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
        return (x - mean.to(x.device)) / std.to(x.device)

    return transform


def batch_images(batch: Any) -> torch.Tensor:
    """The image tensor of one batch: the tensor itself, the first item of a tuple/list, or a dict's ``"image"``."""
    if isinstance(batch, dict):
        if "image" not in batch:
            raise MimlensError(f"batch dict with keys {sorted(batch)}: expected an 'image' key")
        batch = batch["image"]
    elif isinstance(batch, (tuple, list)):
        batch = batch[0]
    if not torch.is_tensor(batch) or batch.dim() != 4:
        shape = f"of shape {tuple(batch.shape)}" if torch.is_tensor(batch) else f"of type {type(batch).__name__}"
        raise MimlensError(f"image batch {shape}: expected a (B, C, H, W) tensor, or a tuple/list/dict holding one")
    return batch


def batches_of(images: torch.Tensor | Iterable, batch_size: int) -> tuple[Iterator[torch.Tensor], int | None]:
    """The image batches of an (N, C, H, W) tensor split into ``batch_size`` or of an iterable of batches
    (:func:`batch_images` of each), and how many there are (None for an iterable)."""
    if not isinstance(images, torch.Tensor):
        return (batch_images(item) for item in images), None
    if images.dim() != 4:
        raise MimlensError(f"images must be a (N, C, H, W) tensor, got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise MimlensError(f"batch_size must be a positive integer, got {batch_size}")
    return iter(images.split(batch_size)), math.ceil(len(images) / batch_size)
