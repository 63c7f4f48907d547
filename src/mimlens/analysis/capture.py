"""Attention capture for the timm ViT family (``VisionTransformer``, distilled DeiT, ``Beit``).

The probabilities come from the model's own explicit attention path: for the pass, every attention
module's ``fused_attn`` flag is switched off, and a forward hook on its ``attn_drop`` (the identity in
eval mode) receives the post-softmax map. Running the model's own code, rather than recomputing the
softmax from q and k beside it, keeps every variant's details exact (relative position bias, shared
BEiT bias, q/k norms, masks) and costs no second attention product. The explicit path is somewhat slower
than the fused one; ``benchmarks/bench_attention.py`` measures the whole analysis against the fused forward.

Each map goes to a callback inside the hook and is dropped when the callback returns, so no attention
map outlives its batch. Hooks, the fused flags and train/eval modes are restored on exit, also on error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from mimlens.errors import MimlensError

__all__ = ["AttentionCall", "eval_mode", "explicit_attention", "hooks_removed_on_exit", "vit_attention_capture"]


@dataclass(frozen=True)
class AttentionCall:
    """One layer's attention probabilities for one batch, and where its tokens sit in the image.

    Attributes:
        layer: position of the layer in capture order (0 = first block).
        name: module path of the block, e.g. ``blocks.3`` or ``layers.1.blocks.0``.
        stage: resolution stage (0 for plain ViTs).
        probs: post-softmax attention. ViT: (B, heads, N, N), prefix tokens first. Swin: (B·nW, heads,
            n, n) for nW windows of n = window_h·window_w slots, windows in raster order per image.
        image_size: (height, width) of the input images in pixels.
        grid: (rows, columns) of the token map this layer attends over.
        stride_px: token stride in input pixels (rows, columns).
        num_prefix: prefix tokens (CLS, distillation, registers) at the start of a ViT sequence.
        window: Swin window size in tokens as the block uses it (after clamping), else None.
        shift: Swin shift in tokens as the block uses it, else None.
        window_mask: the additive shift mask the block passed to its attention, (nW, n, n) with 0 for
            allowed pairs and −100 for masked ones, or None when the block has no shift.
    """

    layer: int
    name: str
    stage: int
    probs: torch.Tensor
    image_size: tuple[int, int]
    grid: tuple[int, int]
    stride_px: tuple[int, int]
    num_prefix: int = 0
    window: tuple[int, int] | None = None
    shift: tuple[int, int] | None = None
    window_mask: torch.Tensor | None = None


@contextmanager
def explicit_attention(modules: list[nn.Module]) -> Iterator[None]:
    """Switch ``fused_attn`` off on the given attention modules, restoring each module's flag on exit."""
    saved = [(m, m.fused_attn) for m in modules if hasattr(m, "fused_attn")]
    try:
        for m, _ in saved:
            m.fused_attn = False
        yield
    finally:
        for m, flag in saved:
            m.fused_attn = flag


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put the models in eval mode (no dropout or drop path while measuring), restoring every module's mode."""
    saved = [(m, m.training) for model in models for m in model.modules()]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for m, training in saved:
            m.training = training


@contextmanager
def hooks_removed_on_exit() -> Iterator[list]:
    """Collect hook handles in the yielded list; all are removed on exit, also on error."""
    handles: list = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def vit_blocks(model: nn.Module) -> list[nn.Module]:
    """The attention blocks of a timm ViT-family model, checked for what the capture needs."""
    blocks = getattr(model, "blocks", None)
    patch_embed = getattr(model, "patch_embed", None)
    if blocks is None or patch_embed is None or not hasattr(model, "num_prefix_tokens"):
        raise MimlensError(
            f"cannot capture attention of {type(model).__name__}: expected a timm VisionTransformer, "
            "VisionTransformerDistilled, Beit, SwinTransformer or SwinTransformerV2 "
            "(with `blocks`, `patch_embed` and `num_prefix_tokens`, or Swin `layers`)"
        )
    for i, block in enumerate(blocks):
        attn = getattr(block, "attn", None)
        if not isinstance(getattr(attn, "attn_drop", None), nn.Dropout) or not hasattr(attn, "num_heads"):
            raise MimlensError(
                f"cannot capture attention of {type(model).__name__}: block `blocks.{i}` has no `attn` module "
                "with `attn_drop` (nn.Dropout) and `num_heads` as timm's Attention has"
            )
    return list(blocks)


def token_grid(patch_embed: nn.Module, image_size: tuple[int, int]) -> tuple[int, int]:
    """The patch grid timm's ``PatchEmbed`` makes of an image of this size (dynamic padding included)."""
    if hasattr(patch_embed, "dynamic_feat_size"):
        return tuple(patch_embed.dynamic_feat_size(image_size))
    return tuple(s // p for s, p in zip(image_size, patch_embed.patch_size, strict=True))


@contextmanager
def vit_attention_capture(model: nn.Module, callback: Callable[[AttentionCall], None]) -> Iterator[list[str]]:
    """Call ``callback`` with every block's attention during forwards inside the context; yields layer names.

    The token grid and the number of prefix tokens are read from the model and from each input's size
    (``patch_embed.dynamic_feat_size``), so dynamic image sizes and non-square grids work.
    """
    blocks = vit_blocks(model)
    patch_embed = model.patch_embed
    num_prefix = int(model.num_prefix_tokens)
    stride = tuple(int(s) for s in patch_embed.patch_size)
    names = [f"blocks.{i}" for i in range(len(blocks))]
    seen: dict[str, tuple[int, int]] = {}

    def record_image_size(module, args):
        seen["image_size"] = tuple(int(s) for s in args[0].shape[-2:])

    def on_probs(layer, module, args, probs):
        image_size = seen["image_size"]
        grid = token_grid(patch_embed, image_size)
        expected = num_prefix + grid[0] * grid[1]
        if probs.dim() != 4 or probs.shape[-1] != expected or probs.shape[-2] != expected:
            raise MimlensError(
                f"attention of `{names[layer]}` has shape {tuple(probs.shape)}; expected (B, heads, {expected}, "
                f"{expected}) for {num_prefix} prefix tokens and a {grid[0]}x{grid[1]} patch grid"
            )
        callback(AttentionCall(layer, names[layer], 0, probs, image_size, grid, stride, num_prefix=num_prefix))

    with ExitStack() as stack:
        handles = stack.enter_context(hooks_removed_on_exit())
        stack.enter_context(explicit_attention([b.attn for b in blocks]))
        stack.enter_context(eval_mode(model))
        handles.append(patch_embed.register_forward_pre_hook(record_image_size))
        for i, block in enumerate(blocks):
            handles.append(block.attn.attn_drop.register_forward_hook(partial(on_probs, i)))
        yield names
