"""Pre-training objectives around an unmodified timm backbone: SimMIM, supervised classification, MoCo v3.

Each objective keeps the backbone as ``encoder`` (timm key names under ``encoder.``), returns
``{"loss", ...}`` from ``forward(batch)`` and builds its per-sample ``transform(img_size, crop_scale)``;
:data:`OBJECTIVES` (:mod:`mimlens.pretrain.registry`) lists them;
:func:`mimlens.pretrain.run.pretrain` runs one from a config through :func:`mimlens.engine.train`.
"""

from mimlens.pretrain.moco import MoCo
from mimlens.pretrain.registry import OBJECTIVES
from mimlens.pretrain.simmim import SimMIM, masked_l1, save_reconstruction_figure
from mimlens.pretrain.supervised import Supervised

__all__ = ["OBJECTIVES", "MoCo", "SimMIM", "Supervised", "masked_l1", "save_reconstruction_figure"]
