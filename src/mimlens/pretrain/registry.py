"""The pre-training objectives: what each declares (its config section, crop scale, what the data and the
backbone fill in) and which functions build it. ``pretrain``, its command line and the demo's bars read this
table, so an objective registered here is available everywhere.

This module imports only the standard library, so a command line can list the objectives cheaply. Functions
are named ``"module:function"`` (imported when used) or given as callables (a plug-in's own).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mimlens.registry import Registry, resolve


@dataclass(frozen=True)
class Objective:
    """One pre-training objective.

    ``section``: defaults of its config section (``cfg[name]``); ``crop_scale``: the random resized crop's area
    range when ``data.crop_scale`` is not set; ``build(encoder, cfg) -> nn.Module``: the objective around the
    backbone (``forward(batch) -> {"loss", ...}``, ``transform(img_size, crop_scale)``); ``resolve(cfg, encoder,
    dataset)``: fills, in place, what the data and the backbone decide (None: nothing); ``finish(objective,
    dataset, transform, cfg, run_dir)``: runs once after a finished run on the main process (a figure, say).
    """

    name: str
    help: str
    build: str | Callable
    section: dict[str, Any] = field(default_factory=dict)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    resolve: str | Callable | None = None
    finish: str | Callable | None = None

    def build_function(self) -> Callable:
        return resolve(self.build)

    def resolve_function(self) -> Callable | None:
        return resolve(self.resolve)

    def finish_function(self) -> Callable | None:
        return resolve(self.finish)


OBJECTIVES: Registry = Registry("objective")


def register(entry: Objective) -> Objective:
    """Add ``entry`` to :data:`OBJECTIVES` (a plug-in calls this before the command line is built)."""
    return OBJECTIVES.register(entry)


def objective(name: str) -> Objective:
    return OBJECTIVES.entry(name)


for _entry in (
    Objective("simmim", "SimMIM: masked image modeling, L1 on the masked pixels",
              "mimlens.pretrain.simmim:build", {"mask_ratio": 0.6, "mask_patch": None}, (0.67, 1.0),
              "mimlens.pretrain.simmim:resolve", "mimlens.pretrain.simmim:finish"),
    Objective("supervised", "supervised classification (cross-entropy, optional mixup / cutmix)",
              "mimlens.pretrain.supervised:build",
              {"num_classes": None, "label_smoothing": 0.1, "mixup": 0.0, "cutmix": 0.0}, (0.08, 1.0),
              "mimlens.pretrain.supervised:resolve"),
    Objective("moco", "MoCo v3: contrastive, momentum encoder",
              "mimlens.pretrain.moco:build",
              {"dim": 256, "mlp_dim": 4096, "temperature": 0.2, "momentum": 0.99, "freeze_patch_embed": True}),
):
    register(_entry)
