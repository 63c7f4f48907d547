"""The training objective of every task, in the engine's contract: ``forward(batch)`` returns a dict of
scalar tensors with ``"loss"``, ``encoder`` is the backbone (exported as ``backbone.safetensors``), and
``param_groups`` gives the optimizer groups with per-block ``lr_scale`` (layer-wise lr decay)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mimlens.engine.layer_decay import layer_decay_param_groups

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


class TaskObjective(nn.Module):
    """A task model (with ``encoder`` and, unless the head lives inside the encoder, ``head``) and its loss."""

    def __init__(self, model: nn.Module, loss: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.loss(self.model, batch)

    def param_groups(self, weight_decay: float, layer_decay: float) -> list[dict]:
        return layer_decay_param_groups(self.model.encoder, weight_decay, layer_decay,
                                        heads=getattr(self.model, "head", None), prefix="model.encoder.",
                                        heads_prefix="model.head.")
