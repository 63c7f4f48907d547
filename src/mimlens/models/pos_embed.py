"""Fixed 2-D sin-cos position embedding for timm ViTs (MoCo v3 / MAE style).

At tiny scale a frozen sin-cos embedding is what lets SimMIM become local at all (with a learned one it did
not within 45k images on 2 CPU cores); MoCo v3 uses it for stability. Channel layout for an embedding of
width D (D divisible by 4), token at grid row r, column c, with ω_i = 10000^(-i / (D/4)), i = 0 … D/4 − 1:

    [sin(r·ω), cos(r·ω), sin(c·ω), cos(c·ω)]

(MoCo v3's order; MAE puts the column first — a fixed permutation of channels, equivalent for a model
trained with it). Patch tokens are in raster order; prefix tokens (CLS, distillation, registers) get zeros.
"""

from __future__ import annotations

import torch
from timm.layers import build_sincos2d_pos_embed
from torch import nn

from mimlens.errors import MimlensError

__all__ = ["sincos_pos_embed", "use_sincos_pos_embed"]


def sincos_pos_embed(grid_size: tuple[int, int], dim: int, num_prefix_tokens: int = 0) -> torch.Tensor:
    """The fixed embedding as a (1, num_prefix_tokens + rows·cols, dim) tensor, prefix rows zero."""
    if dim % 4:
        raise MimlensError(f"a 2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    patches = build_sincos2d_pos_embed(list(grid_size), dim=dim, interleave_sin_cos=True)
    return torch.cat([patches.new_zeros(num_prefix_tokens, dim), patches])[None]


def use_sincos_pos_embed(model: nn.Module) -> nn.Module:
    """Replace a ViT's learned absolute position embedding in place by the fixed one (``requires_grad=False``)."""
    pos_embed = getattr(model, "pos_embed", None)
    if not isinstance(pos_embed, nn.Parameter) or not hasattr(model, "patch_embed"):
        raise MimlensError(
            f"pos_embed='sincos' needs a ViT with an absolute position embedding; {type(model).__name__} has none "
            "(Swin and relative-position models keep their own)"
        )
    num_prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
    fixed = sincos_pos_embed(tuple(model.patch_embed.grid_size), pos_embed.shape[-1], num_prefix)
    if fixed.shape != pos_embed.shape:
        raise MimlensError(
            f"sin-cos position embedding has shape {tuple(fixed.shape)} but {type(model).__name__}.pos_embed has "
            f"{tuple(pos_embed.shape)}"
        )
    with torch.no_grad():
        pos_embed.copy_(fixed)
    pos_embed.requires_grad_(False)
    return model
