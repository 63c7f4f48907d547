"""Dropping the last k blocks of a backbone (the paper's Fig. 5).

The same backbone with its last k transformer blocks removed and its final norm kept, then fine-tuned and
evaluated exactly like the full one. ViT / DeiT / BEiT: the last k entries of ``blocks``. Swin / SwinV2: blocks
are counted from the end across stages; a stage left without blocks is removed together with its patch merging
(which timm places at the start of a stage), and since the final norm and the classifier were sized for the
removed stage's width they are replaced by fresh ones of the new width (norm: identity affine; classifier:
timm's initialisation) — they are retrained by the fine-tuning that follows.
"""

from __future__ import annotations

from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer_v2 import SwinTransformerV2
from torch import nn

from mimlens.errors import MimlensError

__all__ = ["drop_last_blocks"]


def drop_last_blocks(model: nn.Module, k: int) -> nn.Module:
    """Remove the last ``k`` blocks in place and return the model; ``model.dropped_last_blocks`` adds up k."""
    if isinstance(model, (SwinTransformer, SwinTransformerV2)):
        total = sum(len(stage.blocks) for stage in model.layers)
    elif isinstance(getattr(model, "blocks", None), (nn.Sequential, nn.ModuleList)):
        total = len(model.blocks)
    else:
        raise MimlensError(f"drop_last_blocks supports ViT/DeiT/BEiT and Swin/SwinV2, got {type(model).__name__}")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < total:
        raise MimlensError(f"k must be an integer with 0 <= k < {total} (the number of blocks), got {k!r}")
    if k:
        if hasattr(model, "layers"):
            _drop_swin(model, k)
        else:
            model.blocks = model.blocks[: total - k]
            if hasattr(model, "feature_info"):
                model.feature_info = model.feature_info[: total - k]
    model.dropped_last_blocks = getattr(model, "dropped_last_blocks", 0) + k
    return model


def _drop_swin(model: SwinTransformer | SwinTransformerV2, k: int) -> None:
    depths = [len(stage.blocks) for stage in model.layers]
    while k >= depths[-1]:
        k -= depths.pop()
    if k:
        stage = model.layers[len(depths) - 1]
        stage.blocks = stage.blocks[: depths[-1] - k]
        stage.depth = len(stage.blocks)
    if len(depths) < len(model.layers):
        norm, num_classes, pool = model.norm, model.num_classes, model.global_pool
        model.prune_intermediate_layers([len(depths) - 1], prune_norm=False, prune_head=False)
        model.feature_info = model.feature_info[: len(depths)]
        param = next(norm.parameters())
        model.norm = type(norm)(model.num_features, eps=norm.eps).to(param.device, param.dtype)
        model.reset_classifier(num_classes, pool)
        model.num_layers = len(depths)
