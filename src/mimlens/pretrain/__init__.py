"""Pre-training objectives around an unmodified timm backbone: SimMIM, supervised classification, MoCo v3.

Each objective keeps the backbone as ``encoder`` (timm key names under ``encoder.``), returns
``{"loss", ...}`` from ``forward(batch)`` and builds its per-sample ``transform(img_size, crop_scale)``;
:data:`OBJECTIVES` (:mod:`mimlens.pretrain.registry`) lists them;
:func:`mimlens.pretrain.run.pretrain` runs one from a config through :func:`mimlens.engine.train`.
The objectives are imported lazily, so that a command line can read the registry without importing torch.
"""

import importlib
from typing import Any

from mimlens.pretrain.registry import OBJECTIVES

_LAZY = {"MoCo": "moco", "SimMIM": "simmim", "masked_l1": "simmim", "save_reconstruction_figure": "simmim",
         "Supervised": "supervised"}

__all__ = ["OBJECTIVES", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"mimlens.pretrain.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mimlens.pretrain' has no attribute {name!r}")
