"""Block outputs of timm ViT-family and Swin/SwinV2 models as sample matrices for CKA, captured with forward hooks.

Blocks are found by name, in forward order: ViT family (ViT, DeiT, BEiT, EVA, ...) ``blocks.{i}``, output
(B, T, D) with the model's ``num_prefix_tokens`` (CLS, distillation, register tokens) first; Swin and SwinV2
``layers.{i}.blocks.{j}``, output (B, H, W, C) — channels last, as timm 1.0 writes it — with no prefix tokens.

Sample unit: how one block output becomes the rows of an (n, d) matrix.

- ``image`` (default): all patch tokens of an image flattened into one vector; one row per image.
- ``pooled``: one token-average per image (``pooled="mean"``, the mean patch token), or the CLS token
  (``pooled="cls"``, ViT family only).
- ``token``: every patch token is a row (n = images x tokens).

Prefix tokens follow the prefix policy (``mimlens.analysis.choices``): ``renorm`` and ``drop`` leave them out, ``keep``
includes them (in the flattened vector, the mean and the token rows). Features are never renormalised, so for
features ``renorm`` and ``drop`` are the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from mimlens.analysis.choices import POOLED, PREFIX_POLICIES, UNITS, check_choice
from mimlens.analysis.inputs import batch_images
from mimlens.errors import MimlensError
from mimlens.models.family import num_prefix_tokens

__all__ = ["MIN_BATCH", "BlockFeatures", "block_names", "block_samples", "image_batches"]

MIN_BATCH = 4  # the unbiased HSIC needs n >= 4 samples

_BLOCK = re.compile(r"(?:^|\.)blocks\.\d+$")


def block_names(model: nn.Module) -> list[str]:
    """Names of the transformer blocks in forward order (outermost ``blocks.<i>`` modules, nested ones skipped)."""
    names: list[str] = []
    for name, _ in model.named_modules():
        if _BLOCK.search(name) and not any(name.startswith(outer + ".") for outer in names):
            names.append(name)
    if not names:
        raise MimlensError(
            f"{type(model).__name__}: no transformer blocks found; expected modules named 'blocks.<i>' (ViT family) "
            "or 'layers.<i>.blocks.<j>' (Swin, SwinV2)"
        )
    return names


def block_samples(
    output: torch.Tensor,
    unit: str = "image",
    prefix_tokens: int = 0,
    prefix_policy: str = "renorm",
    pooled: str = "mean",
) -> torch.Tensor:
    """One block output as an (n, d) sample matrix (see the module docstring for units and the prefix policy).

    Args:
        output: (B, T, D) tokens with ``prefix_tokens`` first, or (B, H, W, C) channels-last maps.
        unit: ``image``, ``pooled`` or ``token``.
        prefix_tokens: number of prefix tokens at the start of a (B, T, D) output.
        prefix_policy: ``renorm``/``drop`` leave prefix tokens out, ``keep`` includes them.
        pooled: ``mean`` (token average) or ``cls`` (first prefix token), for ``unit="pooled"``.
    """
    if output.dim() == 4:
        if pooled == "cls" and unit == "pooled":
            raise MimlensError("pooled='cls' needs a CLS token; Swin/SwinV2 blocks have none (use pooled='mean')")
        tokens, cls = output.flatten(1, 2), None
    elif output.dim() == 3:
        cls = output[:, 0] if prefix_tokens else None
        tokens = output if prefix_policy == "keep" else output[:, prefix_tokens:]
    else:
        raise MimlensError(f"block output of shape {tuple(output.shape)}: expected (B, T, D) tokens or (B, H, W, C)")
    if unit == "image":
        return tokens.flatten(1)
    if unit == "token":
        return tokens.flatten(0, 1)
    if pooled == "cls":
        if cls is None:
            raise MimlensError("pooled='cls' needs a CLS token, but the model has num_prefix_tokens = 0")
        return cls
    return tokens.mean(1)


class BlockFeatures:
    """Forward hooks on every block that keep the last forward's sample matrices; hooks removed on exit.

    ``reduce`` (optional) maps each (n, d) sample matrix to what the caller needs (e.g. a Gram matrix) inside
    the hook, so a block's full output never outlives its forward step. Use as a context manager::

        with BlockFeatures(model, unit="pooled") as feats:
            model(x)
            samples = feats.pop()        # {layer name: (n, d) tensor}; blocks that did not run are absent
    """

    def __init__(
        self,
        model: nn.Module,
        unit: str = "image",
        prefix_policy: str = "renorm",
        pooled: str = "mean",
        reduce: Callable[[torch.Tensor], Any] | None = None,
    ):
        check_choice("unit", unit, UNITS)
        check_choice("prefix_policy", prefix_policy, PREFIX_POLICIES)
        check_choice("pooled", pooled, POOLED)
        self.model = model
        self.layers = block_names(model)
        self.unit, self.prefix_policy, self.pooled = unit, prefix_policy, pooled
        self.prefix_tokens = num_prefix_tokens(model)
        self.reduce = reduce
        self._captured: dict[str, Any] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> BlockFeatures:
        modules = dict(self.model.named_modules())
        for name in self.layers:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._captured.clear()

    def _hook(self, name: str):
        def hook(module, args, output):
            tokens = output[0] if isinstance(output, (tuple, list)) else output
            samples = block_samples(tokens.detach(), self.unit, self.prefix_tokens, self.prefix_policy, self.pooled)
            self._captured[name] = self.reduce(samples) if self.reduce else samples

        return hook

    def pop(self) -> dict[str, Any]:
        """What the hooks captured since the last ``pop`` (layer name -> samples or their reduction), then clear."""
        captured, self._captured = self._captured, {}
        return captured


def image_batches(images: torch.Tensor | Iterable, batch_size: int) -> Iterator[torch.Tensor]:
    """Re-chunk images into batches of exactly ``batch_size``; a last batch of fewer than 4 joins the one before.

    ``images`` is an (N, 3, H, W) tensor or an iterable of batches: tensors, tuples/lists whose first item is the
    image tensor, or dicts with an ``"image"`` key. Only a stream of fewer than 4 images in all yields a batch
    under 4 (the CKA accumulator then skips it and says so).
    """
    if batch_size < MIN_BATCH:
        raise MimlensError(f"batch_size={batch_size}: expected at least {MIN_BATCH} (the unbiased HSIC needs n >= 4)")
    stream = images.split(batch_size) if torch.is_tensor(images) else (batch_images(b) for b in images)
    pending: list[torch.Tensor] = []
    held = None
    for batch in stream:
        pending.append(batch)
        while sum(len(p) for p in pending) >= batch_size:
            merged = torch.cat(pending) if len(pending) > 1 else pending[0]
            if held is not None:
                yield held
            held, rest = merged[:batch_size], merged[batch_size:]
            pending = [rest] if len(rest) else []
    rest = torch.cat(pending) if pending else None
    if held is None:
        if rest is not None:
            yield rest
    elif rest is not None and len(rest) < MIN_BATCH:
        yield torch.cat([held, rest])
    else:
        yield held
        if rest is not None:
            yield rest

