"""Data: synthetic scenes and sequences with labels for every task family, the bundled photos, image
folders, transforms, and exporters to COCO keypoints / COCO instances / NYUv2-style depth / LaSOT layouts.

Names are imported lazily so that ``import mimlens.data`` does not pull in torchvision or pycocotools.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SyntheticScenes": "mimlens.data.synthetic",
    "SyntheticSequences": "mimlens.data.synthetic",
    "SHAPES": "mimlens.data.synthetic",
    "TEXTURES": "mimlens.data.synthetic",
    "KEYPOINT_NAMES": "mimlens.data.synthetic",
    "PhotoCrops": "mimlens.data.folders",
    "ImageFiles": "mimlens.data.folders",
    "build_dataset": "mimlens.data.folders",
    "train_transform": "mimlens.data.transforms",
    "eval_transform": "mimlens.data.transforms",
    "export_coco_keypoints": "mimlens.data.export",
    "export_coco_instances": "mimlens.data.export",
    "export_depth_pairs": "mimlens.data.export",
    "export_lasot": "mimlens.data.export",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mimlens.data' has no attribute {name!r}")
