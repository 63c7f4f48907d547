"""mimlens: look inside, pre-train and transfer Vision Transformers.

The analyses of "Revealing the Dark Secrets of Masked Image Modeling" (Xie et al., CVPR 2023) as a
library and a command line. The public API is imported lazily so that ``import mimlens`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "attention_stats": "mimlens.analysis.attention",
    "AttentionStats": "mimlens.analysis.attention",
    "cka": "mimlens.analysis.cka",
    "feature_cka": "mimlens.analysis.cka",
    "cka_matrix": "mimlens.analysis.cka",
    "build_model": "mimlens.models",
    "load_model": "mimlens.models",
    "drop_last_blocks": "mimlens.models",
    "avg_dist": "mimlens.pretrain.masking",
    "random_block_mask": "mimlens.pretrain.masking",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mimlens' has no attribute {name!r}")
