"""Pre-training and evaluation transforms (torchvision ``transforms.v2``).

Every transform accepts a PIL image or a float tensor ``(3, H, W)`` in [0, 1] (what the synthetic datasets
return) and gives a plain float32 tensor. Normalisation defaults to the ImageNet mean/std; pass
``mean=None`` to keep pixel values in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "eval_transform", "train_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _finish(steps: list, mean: Sequence[float] | None, std: Sequence[float] | None) -> v2.Compose:
    steps = [v2.ToImage(), *steps, v2.ToDtype(torch.float32, scale=True)]
    if mean is not None:
        steps.append(v2.Normalize(mean=list(mean), std=list(std if std is not None else (1.0, 1.0, 1.0))))
    return v2.Compose([*steps, v2.ToPureTensor()])


def train_transform(
    img_size: int,
    *,
    scale: tuple[float, float] = (0.67, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> v2.Compose:
    """SimMIM / supervised pre-training augmentation: random resized crop (area ``scale``, aspect ``ratio``)
    to ``img_size``, horizontal flip with probability ``hflip``, then normalisation."""
    crop = v2.RandomResizedCrop(img_size, scale=scale, ratio=ratio, antialias=True)
    return _finish([crop, v2.RandomHorizontalFlip(hflip)], mean, std)


def eval_transform(
    img_size: int | tuple[int, int],
    *,
    crop_fraction: float = 1.0,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> v2.Compose:
    """Evaluation: resize the shorter side to ``max(img_size) / crop_fraction``, centre-crop ``img_size``
    (an int or ``(height, width)``; ``crop_fraction=0.875`` is the classic 224/256), then normalisation."""
    side = img_size if isinstance(img_size, int) else max(img_size)
    resize = v2.Resize(round(side / crop_fraction), antialias=True)
    return _finish([resize, v2.CenterCrop(img_size)], mean, std)
