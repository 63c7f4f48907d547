"""Backbone families: the one place that knows how a timm backbone is laid out.

Two families, told apart by the model's own structure:

- ``vit``: ViT, DeiT, BEiT, EVA — a ``blocks`` sequence after the patch embedding; ``num_prefix_tokens``
  CLS / distillation / register tokens lead every token sequence.
- ``swin``: Swin, SwinV2 — ``layers`` of stages, each with ``blocks``; patch merging at the start of a stage
  (timm >= 0.9), outputs channels-last (B, H, W, C), no prefix tokens.

Block index: one 0-based index over every block in forward order (Swin blocks counted across stages), the same
for ``probe --blocks``, ``finetune --probe-block``, ``--drop-last`` and the analyses' layers. A Swin stage is a
label of a block, never an index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from mimlens.errors import MimlensError

__all__ = ["BlockRef", "Family", "family_of", "find_family", "num_prefix_tokens", "FAMILIES"]


@dataclass(frozen=True)
class BlockRef:
    """A block in forward order: ``index`` over the whole model, module ``name``, Swin ``stage`` (0 for ViT)."""

    index: int
    name: str
    stage: int


class Family:
    """What every module may ask of a backbone; one subclass per family."""

    name = ""
    hierarchical = False  # stages of decreasing resolution (a feature pyramid comes from them)
    default_layer_decay = 1.0

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def depths(self, model: nn.Module) -> tuple[int, ...]:
        """Blocks per stage (one stage for the ViT family)."""
        raise NotImplementedError

    def blocks(self, model: nn.Module) -> list[BlockRef]:
        raise NotImplementedError

    def num_prefix_tokens(self, model: nn.Module) -> int:
        return 0

    def rebuild_kwargs(self, model: nn.Module) -> dict[str, Any]:
        """timm keywords that build this architecture as it is now (after blocks were dropped)."""
        raise NotImplementedError

    def drop_last(self, model: nn.Module, k: int) -> None:
        """Remove the last ``k`` blocks in place (0 < k < number of blocks)."""
        raise NotImplementedError

    def stop_index(self, block: BlockRef) -> int:
        """The ``forward_intermediates`` index after which ``block``'s output exists (timm counts stages for Swin)."""
        return block.index

    def block(self, model: nn.Module, index: int, what: str = "block") -> BlockRef:
        """The block of ``index``; an error naming ``what`` was asked for and the valid range otherwise."""
        blocks = self.blocks(model)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(blocks):
            raise MimlensError(f"{what} {index!r} does not exist: {type(model).__name__} has {len(blocks)} blocks, "
                               f"indices 0 to {len(blocks) - 1}")
        return blocks[index]


def _sequence(module: Any) -> bool:
    return isinstance(module, nn.Sequential | nn.ModuleList)


class ViTFamily(Family):
    name = "vit"
    default_layer_decay = 0.65  # BEiT / MAE ViT-B fine-tuning

    def matches(self, model: nn.Module) -> bool:
        return _sequence(getattr(model, "blocks", None))

    def depths(self, model: nn.Module) -> tuple[int, ...]:
        return (len(model.blocks),)

    def blocks(self, model: nn.Module) -> list[BlockRef]:
        return [BlockRef(i, f"blocks.{i}", 0) for i in range(len(model.blocks))]

    def num_prefix_tokens(self, model: nn.Module) -> int:
        return int(getattr(model, "num_prefix_tokens", 0))

    def rebuild_kwargs(self, model: nn.Module) -> dict[str, Any]:
        return {"depth": len(model.blocks)}

    def drop_last(self, model: nn.Module, k: int) -> None:
        kept = len(model.blocks) - k
        model.blocks = model.blocks[:kept]
        if hasattr(model, "feature_info"):
            model.feature_info = model.feature_info[:kept]


class SwinFamily(Family):
    name = "swin"
    hierarchical = True
    default_layer_decay = 0.9  # SimMIM's Swin-B fine-tuning

    def matches(self, model: nn.Module) -> bool:
        layers = getattr(model, "layers", None)
        return (not hasattr(model, "blocks") and _sequence(layers) and len(layers) > 0
                and all(_sequence(getattr(stage, "blocks", None)) for stage in layers))

    def depths(self, model: nn.Module) -> tuple[int, ...]:
        return tuple(len(stage.blocks) for stage in model.layers)

    def blocks(self, model: nn.Module) -> list[BlockRef]:
        refs = []
        for s, stage in enumerate(model.layers):
            refs += [BlockRef(len(refs) + j, f"layers.{s}.blocks.{j}", s) for j in range(len(stage.blocks))]
        return refs

    def rebuild_kwargs(self, model: nn.Module) -> dict[str, Any]:
        return {"depths": list(self.depths(model)),
                "num_heads": [stage.blocks[0].attn.num_heads for stage in model.layers]}

    def stop_index(self, block: BlockRef) -> int:
        return block.stage

    def drop_last(self, model: nn.Module, k: int) -> None:
        """A stage left without blocks goes with its patch merging; the final norm and classifier, sized for the
        removed stage's width, are replaced by fresh ones of the new width (retrained by the fine-tuning)."""
        depths = list(self.depths(model))
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


FAMILIES: tuple[Family, ...] = (ViTFamily(), SwinFamily())


def find_family(model: nn.Module) -> Family | None:
    """The family of ``model``, or None when it is neither."""
    return next((family for family in FAMILIES if family.matches(model)), None)


def family_of(model: nn.Module) -> Family:
    """The family of ``model``; an error naming its class when mimlens does not know its layout."""
    family = find_family(model)
    if family is None:
        raise MimlensError(f"{type(model).__name__} is neither a ViT-family model (a 'blocks' sequence: ViT, DeiT, "
                           "BEiT, EVA) nor a Swin-family one ('layers' of stages with 'blocks': Swin, SwinV2)")
    return family


def num_prefix_tokens(model: nn.Module) -> int:
    """CLS + distillation + register tokens before the patch tokens (0 for Swin), as the family reports it; for a
    model of no known family, timm's ``num_prefix_tokens`` of the first submodule that has one (0 if none)."""
    family = find_family(model)
    if family is not None:
        return family.num_prefix_tokens(model)
    return next((int(m.num_prefix_tokens) for m in model.modules() if hasattr(m, "num_prefix_tokens")), 0)
