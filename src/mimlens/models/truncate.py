"""Dropping the last k blocks of a backbone (the paper's Fig. 5).

The same backbone with its last k transformer blocks removed and its final norm kept, then fine-tuned and
evaluated exactly like the full one. ViT / DeiT / BEiT: the last k entries of ``blocks``. Swin / SwinV2: blocks
are counted from the end across stages; a stage left without blocks is removed together with its patch merging
(which timm places at the start of a stage), and since the final norm and the classifier were sized for the
removed stage's width they are replaced by fresh ones of the new width (norm: identity affine; classifier:
timm's initialisation) — they are retrained by the fine-tuning that follows.
"""

from __future__ import annotations

from torch import nn

from mimlens.errors import MimlensError
from mimlens.models.family import find_family

__all__ = ["drop_last_blocks"]


def drop_last_blocks(model: nn.Module, k: int) -> nn.Module:
    """Remove the last ``k`` blocks in place and return the model; ``model.dropped_last_blocks`` adds up k."""
    family = find_family(model)
    if family is None:
        raise MimlensError(f"drop_last_blocks supports ViT/DeiT/BEiT and Swin/SwinV2, got {type(model).__name__}")
    total = sum(family.depths(model))
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < total:
        raise MimlensError(f"k must be an integer with 0 <= k < {total} (the number of blocks), got {k!r}")
    if k:
        family.drop_last(model, k)
    model.dropped_last_blocks = getattr(model, "dropped_last_blocks", 0) + k
    return model
