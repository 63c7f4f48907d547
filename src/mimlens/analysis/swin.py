"""Attention capture for timm ``SwinTransformer`` and ``SwinTransformerV2`` (windowed attention).

Each block attends inside windows: its attention is (B·nW, heads, n, n) over n = window_h·window_w slots
of the rolled and padded map. Everything needed to place those slots back on the map is read from the
block at run time, because timm clamps window and shift on small maps and can build masks per input:
the map size from the block's input (B, H, W, C), ``window_size`` and ``shift_size`` from the block, the
shift mask from the call to its attention module, and the stride from the patch size times 2 for every
patch-merging stage so far. Swin v1's optional fused attention is switched off for the pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial

from torch import nn

from mimlens.analysis.capture import AttentionCall, eval_mode, explicit_attention, hooks_removed_on_exit
from mimlens.errors import MimlensError

__all__ = ["swin_attention_capture", "swin_blocks"]


def swin_blocks(model: nn.Module) -> list[tuple[str, int, int, nn.Module]]:
    """(name, stage, number of 2x downsamplings so far, block) for every Swin block, in forward order."""
    found, downsamplings = [], 0
    for i, stage in enumerate(model.layers):
        if not isinstance(getattr(stage, "downsample", nn.Identity()), nn.Identity):
            downsamplings += 1
        for j, block in enumerate(stage.blocks):
            found.append((f"layers.{i}.blocks.{j}", i, downsamplings, block))
    return found


@contextmanager
def swin_attention_capture(model: nn.Module, callback: Callable[[AttentionCall], None]) -> Iterator[list[str]]:
    """Call ``callback`` with every Swin block's window attention during forwards; yields the layer names."""
    blocks = swin_blocks(model)
    patch = tuple(int(p) for p in model.patch_embed.patch_size)
    seen: dict = {}

    def record_image_size(module, args):
        seen["image_size"] = tuple(int(s) for s in args[0].shape[-2:])

    def record_grid(layer, module, args):
        seen[layer, "grid"] = tuple(int(s) for s in args[0].shape[1:3])

    def record_mask(layer, module, args, kwargs):
        seen[layer, "mask"] = kwargs["mask"] if "mask" in kwargs else (args[1] if len(args) > 1 else None)

    def on_probs(layer, module, args, probs):
        name, stage, downsamplings, block = blocks[layer]
        stride = tuple(p * 2**downsamplings for p in patch)
        grid, window = seen[layer, "grid"], tuple(int(w) for w in block.window_size)
        num_windows = math.prod(math.ceil(g / w) for g, w in zip(grid, window, strict=True))
        n = window[0] * window[1]
        if probs.dim() != 4 or probs.shape[0] % num_windows or probs.shape[-2:] != (n, n):
            raise MimlensError(
                f"window attention of `{name}` has shape {tuple(probs.shape)}; expected (B*{num_windows}, heads, "
                f"{n}, {n}) for a {grid[0]}x{grid[1]} map and {window[0]}x{window[1]} windows"
            )
        shift = tuple(int(s) for s in block.shift_size)
        mask = seen.pop((layer, "mask"))
        image_size = seen["image_size"]
        callback(AttentionCall(layer, name, stage, probs, image_size, grid, stride, 0, window, shift, mask))

    with ExitStack() as stack:
        handles = stack.enter_context(hooks_removed_on_exit())
        stack.enter_context(explicit_attention([b.attn for _, _, _, b in blocks]))
        stack.enter_context(eval_mode(model))
        handles.append(model.patch_embed.register_forward_pre_hook(record_image_size))
        for layer, (_, _, _, block) in enumerate(blocks):
            handles.append(block.register_forward_pre_hook(partial(record_grid, layer)))
            handles.append(block.attn.register_forward_pre_hook(partial(record_mask, layer), with_kwargs=True))
            handles.append(block.attn.attn_drop.register_forward_hook(partial(on_probs, layer)))
        yield [name for name, _, _, _ in blocks]
