"""Supervised (DeiT-style) pre-training: cross-entropy with label smoothing; mixup/cutmix optional (timm).

The backbone is a timm model with its classifier head; the run exports it without the head, so a supervised
run has the same backbone key set as a SimMIM or MoCo run of the same architecture.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from mimlens.data.transforms import train_transform
from mimlens.errors import MimlensError
from mimlens.pretrain.augment import mean_std


class Supervised(nn.Module):
    """Image classification; ``forward({"image", "label"}) -> {"loss", "acc1"}`` (``acc1`` without mixing)."""

    def __init__(self, encoder: nn.Module, *, label_smoothing: float = 0.1, mixup: float = 0.0, cutmix: float = 0.0):
        super().__init__()
        self.num_classes = int(getattr(encoder, "num_classes", 0))
        if self.num_classes < 2:
            raise MimlensError(f"supervised pre-training needs a backbone with a classifier of >= 2 classes, "
                               f"got num_classes={self.num_classes}")
        self.encoder = encoder
        self.label_smoothing = float(label_smoothing)
        self.mixup = None
        if mixup > 0 or cutmix > 0:
            self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=self.label_smoothing,
                               num_classes=self.num_classes)
            self.soft_cross_entropy = SoftTargetCrossEntropy()

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image, label = batch["image"], batch["label"]
        if self.mixup is not None and self.training:
            image, target = self.mixup(image, label)
            return {"loss": self.soft_cross_entropy(self.encoder(image).float(), target)}
        logits = self.encoder(image).float()
        loss = F.cross_entropy(logits, label, label_smoothing=self.label_smoothing)
        return {"loss": loss, "acc1": (logits.argmax(-1) == label).float().mean()}

    def transform(self, img_size: int, crop_scale: Sequence[float] = (0.08, 1.0)) -> SupervisedTransform:
        mean, std = mean_std(self.encoder)
        return SupervisedTransform(train_transform(img_size, scale=tuple(crop_scale), mean=mean, std=std))


class SupervisedTransform:
    """``item`` → ``{"image": normalised crop, "label": item["label"]}``."""

    def __init__(self, augment):
        self.augment = augment

    def __call__(self, item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"image": self.augment(item["image"]), "label": torch.as_tensor(item["label"], dtype=torch.long)}


def resolve(cfg: dict, encoder: nn.Module, dataset) -> None:
    """``supervised.num_classes`` None: the data set's class count; a flat folder (no classes) is refused."""
    if getattr(dataset, "classes", None) == []:
        raise MimlensError(f"data {cfg['data']['source']!r} is a flat folder of images without class labels: "
                           "supervised pre-training needs a tree DIR/<class>/*.jpg (ImageFolder layout); SimMIM "
                           "and MoCo v3 pre-train on flat folders")
    if cfg["supervised"]["num_classes"] is None:
        num_classes = int(getattr(dataset, "num_classes", 0) or 0)
        if num_classes < 2:
            raise MimlensError(f"data {cfg['data']['source']!r} has no class count; set supervised.num_classes")
        cfg["supervised"]["num_classes"] = num_classes


def build(encoder: nn.Module, cfg: dict) -> Supervised:
    """The backbone with a classifier of ``supervised.num_classes`` outputs."""
    section = cfg["supervised"]
    encoder.reset_classifier(int(section["num_classes"]))
    return Supervised(encoder, label_smoothing=section["label_smoothing"], mixup=section["mixup"],
                      cutmix=section["cutmix"])
