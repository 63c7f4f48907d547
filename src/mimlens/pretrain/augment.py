"""MoCo v3's two views, and the normalisation helpers shared by the objectives.

SimMIM and supervised use :func:`mimlens.data.transforms.train_transform` (random resized crop + flip).
All augmentations draw from torch's global RNG only, which :class:`mimlens.engine.SeededTransform` seeds
per ``(seed, epoch, index)``; outputs are normalised with the backbone's own mean and std.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.transforms import v2

from mimlens.models import preprocessing


def mean_std(encoder: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation the backbone expects (:func:`mimlens.models.preprocessing`)."""
    spec = preprocessing(encoder)
    return spec["mean"], spec["std"]


def moco_view(img_size: int, scale: Sequence[float], mean, std, *, blur: float, solarize: float) -> v2.Compose:
    """One of MoCo v3's two asymmetric views (BYOL augmentations) of a PIL image or float tensor in [0, 1];
    the blur is scaled from 224 px to ``img_size``.

    View 1: ``blur=1.0, solarize=0.0``; view 2: ``blur=0.1, solarize=0.2``.
    """
    kernel = 2 * round(0.05 * img_size) + 1
    sigma = (0.1 * img_size / 224, 2.0 * img_size / 224)
    return v2.Compose([
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomResizedCrop(img_size, scale=tuple(scale), antialias=True),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=sigma)], p=blur),
        v2.RandomApply([v2.RandomSolarize(0.5, p=1.0)], p=solarize),
        v2.RandomHorizontalFlip(),
        v2.Normalize(mean, std),
        v2.ToPureTensor(),
    ])


def denormalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Inverse of the normalisation, clamped to [0, 1] for display."""
    mean = torch.tensor(mean, device=images.device).view(-1, 1, 1)
    std = torch.tensor(std, device=images.device).view(-1, 1, 1)
    return (images * std + mean).clamp(0, 1)
