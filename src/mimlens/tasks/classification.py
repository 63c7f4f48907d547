"""Image classification transfer: full fine-tuning with layer-wise lr decay, and the linear probe.

Full fine-tuning: the backbone's own classifier (``reset_classifier``) sits in the top layer-decay group at
scale 1; the blocks follow BEiT's/MAE's rule (:mod:`mimlens.engine.layer_decay`, re-exported here).

Linear probe (MAE): BatchNorm1d without affine parameters + a linear layer on features of a frozen backbone
in eval mode, from the final output or any block (``block``), CLS token or mean of the patch tokens. MAE
trains it with LARS; here it is AdamW (base lr 0.08, no weight decay).
Accuracy: top-1 and top-5 (top-k is reported only for k <= number of classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mimlens import distributed
from mimlens.accumulate import SumAccumulator
from mimlens.engine.layer_decay import layer_decay_param_groups
from mimlens.errors import MimlensError
from mimlens.tasks.backbone import pooled_features

__all__ = ["Classifier", "LinearProbe", "TopKAccuracy", "cross_entropy", "evaluate_classification",
           "layer_decay_param_groups"]


class TopKAccuracy(SumAccumulator):
    """Streaming top-k accuracy (k = 1 and 5 by default); ``items`` keeps, per image in evaluation order, its
    label and whether each top-k holds it (0/1)."""

    def __init__(self, ks: tuple[int, ...] = (1, 5)) -> None:
        super().__init__(correct=(len(ks),), images=())
        self.ks = tuple(ks)
        self.items: list[tuple[int, list[int]]] = []

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        top = logits.detach().topk(min(max(self.ks), logits.shape[1]), dim=1).indices
        hit = top == target.view(-1, 1)
        per_k = torch.stack([hit[:, :k].any(dim=1) for k in self.ks], dim=1)
        self.add("correct", per_k.sum(dim=0))
        self.add("images", target.numel())
        self.items += [(int(y), [int(h) for h in row]) for y, row in zip(target.view(-1), per_k, strict=True)]
        self.num_classes = logits.shape[1]

    def per_item(self) -> dict[str, list[int]]:
        """Per-image ``label`` and top-k hits (0/1) of every process, in the data set's order
        (:func:`mimlens.distributed.gather_sharded`)."""
        items = distributed.gather_sharded(self.items)
        reported = [k for k in self.ks if k <= getattr(self, "num_classes", k)]
        return {"label": [y for y, _ in items],
                **{f"top{k}": [hits[self.ks.index(k)] for _, hits in items] for k in reported}}

    def compute(self) -> dict[str, float]:
        images = float(self.sums["images"])
        if images == 0:
            raise MimlensError("no image was evaluated")
        return {f"top{k}": float(c) / images for k, c in zip(self.ks, self.sums["correct"], strict=True)
                if k <= getattr(self, "num_classes", k)}


class Classifier(nn.Module):
    """Full fine-tuning: a timm backbone with its own classifier (``reset_classifier``), so the classifier
    falls in the top layer-decay group."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        encoder.reset_classifier(num_classes)
        self.encoder = encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)


class LinearProbe(nn.Module):
    """BatchNorm1d (no affine) + linear classifier (``head``) on frozen backbone features; the backbone stays
    in eval mode and gets no gradient."""

    def __init__(self, encoder: nn.Module, num_classes: int, feature_dim: int, block: int | None = None,
                 pool: str = "cls") -> None:
        super().__init__()
        encoder.requires_grad_(False)
        self.encoder = encoder.eval()
        self.block, self.pool = block, pool
        self.head = nn.Sequential(nn.BatchNorm1d(feature_dim, affine=False, eps=1e-6),
                                  nn.Linear(feature_dim, num_classes))
        nn.init.trunc_normal_(self.head[1].weight, std=0.01)
        nn.init.zeros_(self.head[1].bias)

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = pooled_features(self.encoder, images, self.block, self.pool)
        return self.head(features)


def cross_entropy(label_key: str = "label", label_smoothing: float = 0.0):
    """The classification loss on ``batch[label_key]``, with training accuracy logged as ``acc``."""

    def loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = model(batch["image"])
        target = batch[label_key]
        return {"loss": F.cross_entropy(logits, target, label_smoothing=label_smoothing),
                "acc": (logits.detach().argmax(dim=1) == target).float().mean()}

    return loss


@torch.no_grad()
def evaluate_classification(model: Classifier | LinearProbe, loader, label_key: str = "label") -> TopKAccuracy:
    """Top-1/top-5 of ``model`` over ``loader`` (batches with ``image`` and ``label_key``)."""
    model.eval()
    device = next(model.parameters()).device
    acc = TopKAccuracy()
    for batch in loader:
        acc.update(model(batch["image"].to(device)).cpu(), batch[label_key])
    return acc
