"""What a task head reads from a timm backbone: the last feature map, or pooled tokens of one block.

Conventions: ViT-family outputs are token sequences whose first ``num_prefix_tokens`` are CLS/register
tokens; patch tokens are reshaped to the patch grid in raster order. timm Swin/SwinV2 ``forward_features``
is NHWC. Block indices follow timm's ``forward_intermediates``: blocks for ViT/BEiT, stages for Swin.
"""

from __future__ import annotations

import torch
from torch import nn

from mimlens.errors import MimlensError


def num_prefix_tokens(backbone: nn.Module) -> int:
    return int(getattr(backbone, "num_prefix_tokens", 0))


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, h·w, C) patch tokens in raster order → (B, C, h, w)."""
    b, n, c = tokens.shape
    h, w = grid
    if n != h * w:
        raise MimlensError(f"{n} patch tokens do not fill a {h}x{w} grid")
    return tokens.transpose(1, 2).reshape(b, c, h, w)


def token_grid(backbone: nn.Module, image_size: tuple[int, int]) -> tuple[int, int]:
    """Patch grid (rows, cols) of a ViT-family backbone for an input of ``image_size`` (H, W) pixels."""
    patch_embed = backbone.patch_embed
    if hasattr(patch_embed, "dynamic_feat_size"):
        return tuple(patch_embed.dynamic_feat_size(tuple(image_size)))
    ph, pw = patch_embed.patch_size
    return image_size[0] // ph, image_size[1] // pw


def feature_map(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The backbone's last feature map (final norm applied) as (B, C, h, w)."""
    out = backbone.forward_features(images)
    if out.ndim == 4:
        return out.permute(0, 3, 1, 2) if getattr(backbone, "output_fmt", "NHWC") == "NHWC" else out
    patches = out[:, num_prefix_tokens(backbone):]
    return tokens_to_map(patches, token_grid(backbone, images.shape[-2:]))


@torch.no_grad()
def feature_shape(backbone: nn.Module, image_size: tuple[int, int]) -> tuple[int, int, int]:
    """(C, h, w) of :func:`feature_map` for one image of ``image_size``, found by a forward pass."""
    param = next(backbone.parameters())
    was_training = backbone.training
    backbone.eval()
    out = feature_map(backbone, torch.zeros(1, 3, *image_size, device=param.device, dtype=param.dtype))
    backbone.train(was_training)
    return tuple(out.shape[1:])


def pooled_features(backbone: nn.Module, images: torch.Tensor, block: int | None = None,
                    pool: str = "cls") -> torch.Tensor:
    """One vector per image for a linear probe.

    Args:
        block: None for the final output (final norm applied); else the 0-based index of a block (ViT) or
            stage (Swin) as timm's ``forward_intermediates`` counts them, taken before the final norm.
        pool: ``cls`` (first prefix token) or ``avg`` (mean of the patch tokens, or of the Swin map).
    """
    if pool not in ("cls", "avg"):
        raise MimlensError(f"pool must be 'cls' or 'avg', got {pool!r}")
    prefix = num_prefix_tokens(backbone)
    if pool == "cls" and prefix == 0:
        raise MimlensError(f"{type(backbone).__name__} has no CLS token: use pool 'avg'")
    if block is None:
        out = backbone.forward_features(images)
        if out.ndim == 4:
            return out.mean(dim=(1, 2)) if getattr(backbone, "output_fmt", "NHWC") == "NHWC" else out.mean(dim=(2, 3))
        return out[:, 0] if pool == "cls" else out[:, prefix:].mean(dim=1)
    count, unit = (len(backbone.layers), "stages") if has_stages(backbone) else (len(backbone.blocks), "blocks")
    if not 0 <= block < count:
        raise MimlensError(f"block {block} (linear.block, --probe-block) is out of range: the backbone has {count} "
                           f"{unit}, 0 to {count - 1}")
    if has_stages(backbone):
        (fmap,) = backbone.forward_intermediates(
            images, indices=[block], intermediates_only=True, stop_early=True, output_fmt="NCHW"
        )
        return fmap.mean(dim=(2, 3))
    (taken,) = backbone.forward_intermediates(
        images, indices=[block], intermediates_only=True, stop_early=True, output_fmt="NLC", return_prefix_tokens=True
    )
    patches, prefix_tokens = taken if isinstance(taken, tuple) else (taken, None)
    return prefix_tokens[:, 0] if pool == "cls" else patches.mean(dim=1)


def has_stages(backbone: nn.Module) -> bool:
    """True for hierarchical backbones (Swin family: ``layers`` of stages), False for ViT-family ``blocks``."""
    return not hasattr(backbone, "blocks") and hasattr(backbone, "layers")
