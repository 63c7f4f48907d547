"""What a task head reads from a timm backbone: the last feature map, or pooled tokens of one block.

Conventions: ViT-family outputs are token sequences whose first ``num_prefix_tokens`` are CLS/register
tokens; patch tokens are reshaped to the patch grid in raster order. timm Swin/SwinV2 ``forward_features``
is NHWC. A block index counts every block in forward order (Swin blocks across stages), as everywhere in
mimlens (:mod:`mimlens.models.family`).
"""

from __future__ import annotations

import torch
from torch import nn

from mimlens.errors import MimlensError
from mimlens.models.family import family_of, num_prefix_tokens


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
        block: None for the final output (final norm applied); else the 0-based index of a block over the whole
            model (Swin blocks counted across stages), its output taken before the final norm.
        pool: ``cls`` (first prefix token) or ``avg`` (mean of the patch tokens, or of the Swin map).
    """
    if pool not in ("cls", "avg"):
        raise MimlensError(f"pool must be 'cls' or 'avg', got {pool!r}")
    prefix = num_prefix_tokens(backbone)
    if pool == "cls" and prefix == 0:
        raise MimlensError(f"{type(backbone).__name__} has no CLS token: use pool 'avg'")
    if block is None:
        out = backbone.forward_features(images)
        if out.ndim == 4 and getattr(backbone, "output_fmt", "NHWC") != "NHWC":
            out = out.permute(0, 2, 3, 1)
    else:
        out = block_output(backbone, images, block)
    if out.ndim == 4:  # a Swin map, (B, H, W, C)
        return out.mean(dim=(1, 2))
    return out[:, 0] if pool == "cls" else out[:, prefix:].mean(dim=1)


def block_output(backbone: nn.Module, images: torch.Tensor, index: int) -> torch.Tensor:
    """The output of block ``index`` as the block returns it ((B, T, C) tokens or a (B, H, W, C) Swin map),
    running the backbone only as far as that block's stage."""
    family = family_of(backbone)
    ref = family.block(backbone, index)
    taken = []
    handle = backbone.get_submodule(ref.name).register_forward_hook(lambda module, args, out: taken.append(out))
    try:
        backbone.forward_intermediates(images, indices=[family.stop_index(ref)], intermediates_only=True,
                                       stop_early=True)
    finally:
        handle.remove()
    return taken[-1]
