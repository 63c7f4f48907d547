"""MoCo v3 (Chen, Xie & He, ICCV 2021, arXiv 2104.02057) around an unmodified timm backbone.

- two augmented views; base branch = encoder → 3-layer projector → 2-layer predictor, momentum branch =
  a copy of encoder → projector updated as ``θ_k ← m θ_k + (1 − m) θ_q`` once per optimizer update, with
  ``m`` following a cosine from ``momentum`` (0.99) at the start to 1 at the end;
- MLPs: Linear (no bias) → BatchNorm → ReLU between layers, BatchNorm without affine after the last;
- loss: symmetrised InfoNCE, ``ctr(q1, k2) + ctr(q2, k1)``, each a cross-entropy over ``q·k / τ``
  (τ = 0.2) against the keys of all processes, scaled by ``2τ`` as in MoCo v3;
- stability tricks of the paper: a frozen random patch embedding (``freeze_patch_embed``) and a fixed
  2-D sin-cos position embedding (built by the backbone, ``pos_embed: sincos`` in the model section).

The backbone (base encoder) keeps timm key names under ``encoder.``; it is what the run exports.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mimlens import distributed
from mimlens.pretrain.augment import mean_std, moco_view


def mlp(num_layers: int, in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """MoCo v3's projector/predictor MLP, ending in a BatchNorm without affine parameters."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden_dim
        d_out = out_dim if i == num_layers - 1 else hidden_dim
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        else:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


def momentum_at(step: int, total_steps: int, base: float) -> float:
    """Cosine schedule of the momentum: ``base`` at step 0, 1 at ``total_steps``."""
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * step / total_steps)) * (1.0 - base)


def gather_keys(keys: torch.Tensor) -> torch.Tensor:
    """All processes' keys concatenated in rank order (no gradient flows to keys)."""
    if distributed.world_size() == 1:
        return keys
    parts = [torch.empty_like(keys) for _ in range(distributed.world_size())]
    dist.all_gather(parts, keys.contiguous())
    return torch.cat(parts)


def contrastive_loss(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of each query against every process's keys (its positive at ``rank · N + i``), × 2τ."""
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(gather_keys(k.float()), dim=1)
    logits = q @ k.T / temperature
    labels = torch.arange(q.shape[0], device=q.device) + q.shape[0] * distributed.rank()
    return F.cross_entropy(logits, labels) * (2 * temperature)


class MoCo(nn.Module):
    """``forward({"view1", "view2"}) -> {"loss"}``; call ``on_step(step, total_steps)`` before each update."""

    def __init__(self, encoder: nn.Module, *, dim: int = 256, mlp_dim: int = 4096, temperature: float = 0.2,
                 momentum: float = 0.99, freeze_patch_embed: bool = True):
        super().__init__()
        self.encoder = encoder
        self.projector = mlp(3, encoder.num_features, mlp_dim, dim)
        self.predictor = mlp(2, dim, mlp_dim, dim)
        if freeze_patch_embed:
            encoder.patch_embed.requires_grad_(False)
        self.momentum_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.temperature = float(temperature)
        self.base_momentum = float(momentum)
        self.momentum = float(momentum)

    def _pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        base = [*self.encoder.parameters(), *self.projector.parameters()]
        ema = [*self.momentum_encoder.parameters(), *self.momentum_projector.parameters()]
        return ema, base

    @torch.no_grad()
    def on_step(self, step: int, total_steps: int) -> None:
        """Set ``m`` for this update and move the momentum branch (the update MoCo v3 does per iteration)."""
        self.momentum = momentum_at(step, total_steps, self.base_momentum)
        ema, base = self._pairs()
        torch._foreach_lerp_(ema, base, 1.0 - self.momentum)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x1, x2 = batch["view1"], batch["view2"]
        q1 = self.predictor(self.projector(self.encoder(x1)))
        q2 = self.predictor(self.projector(self.encoder(x2)))
        with torch.no_grad():
            k1 = self.momentum_projector(self.momentum_encoder(x1))
            k2 = self.momentum_projector(self.momentum_encoder(x2))
        loss = contrastive_loss(q1, k2, self.temperature) + contrastive_loss(q2, k1, self.temperature)
        return {"loss": loss}

    def transform(self, img_size: int, crop_scale: Sequence[float] = (0.08, 1.0)) -> MoCoTransform:
        mean, std = mean_std(self.encoder)
        return MoCoTransform(moco_view(img_size, crop_scale, mean, std, blur=1.0, solarize=0.0),
                             moco_view(img_size, crop_scale, mean, std, blur=0.1, solarize=0.2))


class MoCoTransform:
    """``item["image"]`` → ``{"view1", "view2"}``, two differently augmented crops."""

    def __init__(self, view1, view2):
        self.view1, self.view2 = view1, view2

    def __call__(self, item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"view1": self.view1(item["image"]), "view2": self.view2(item["image"])}


def build(encoder: nn.Module, cfg: dict) -> MoCo:
    return MoCo(encoder, **cfg["moco"])
