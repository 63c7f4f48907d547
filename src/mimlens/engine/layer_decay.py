"""Layer-wise learning-rate decay (BEiT, MAE, SimMIM): one ``lr_scale`` per block, decaying towards the input.

Layer ids, for a backbone of ``L`` blocks (ViT, BEiT: ``L = depth``; Swin, SwinV2: ``L = sum(depths)``):

- 0, the stem: ``patch_embed``, ``pos_embed`` / ``absolute_pos_embed`` and the prefix tokens (``cls_token``,
  ``reg_token``, ``dist_token``, ``mask_token``);
- ``i + 1`` for block ``i`` counted from the input (Swin: across stages);
- ``L + 1``, the top: everything else (final ``norm``, ``fc_norm``, the shared relative position bias
  ``rel_pos_bias``, classifiers), and every task head outside the backbone.

``lr_scale = decay ** (L + 1 − layer id)``: the stem ``decay^(L+1)``, the last block ``decay``, the top 1.
This is BEiT's ``get_num_layer_for_vit`` (unilm beit/optim_factory.py), MAE's ``get_layer_id_for_vit``
(util/lr_decay.py) and SimMIM's ``get_vit_layer`` / ``get_swin_layer`` (optimizer.py). Swin's patch merging
shares the layer of the last block before it, as in SimMIM, whose ``layers.{s}.downsample`` ends stage ``s``;
timm's ``layers.{s}.downsample`` opens stage ``s``, so it takes the layer of stage ``s − 1``'s last block.
SimMIM leaves a Swin ``absolute_pos_embed`` at the top; here it is stem, like ViT's ``pos_embed`` (SimMIM's
Swin configs never enable it).

Groups carry ``params``, ``param_names``, ``lr_scale`` and ``weight_decay`` but no ``lr``: the optimizer's lr
is the base lr and timm's scheduler multiplies it by ``lr_scale`` once. 1-D parameters and names listed by
``no_weight_decay()`` get no weight decay.
"""

from __future__ import annotations

from torch import nn

from mimlens.errors import MimlensError
from mimlens.models.family import find_family

STEM_NAMES = ("patch_embed", "pos_embed", "absolute_pos_embed", "cls_token", "reg_token", "dist_token", "mask_token")


def backbone_layout(backbone: nn.Module) -> tuple[str, tuple[int, ...]] | None:
    """(family name, blocks per stage) of the backbone (:mod:`mimlens.models.family`); None for anything else."""
    family = find_family(backbone)
    return None if family is None else (family.name, family.depths(backbone))


def layer_id(name: str, layout: tuple[str, tuple[int, ...]]) -> int:
    """The layer id (0 … L + 1) of backbone parameter ``name`` (see the module docstring)."""
    family, depths = layout
    parts = name.split(".")
    if parts[0] in STEM_NAMES:
        return 0
    if family == "vit" and parts[0] == "blocks":
        return int(parts[1]) + 1
    if family == "swin" and parts[0] == "layers" and len(parts) > 3:
        stage = int(parts[1])
        if parts[2] == "blocks":
            return sum(depths[:stage]) + int(parts[3]) + 1
        if parts[2] == "downsample":
            return sum(depths[:stage])
    return sum(depths) + 1


def layer_scale(layer: int, num_blocks: int, decay: float) -> float:
    """``decay ** (num_blocks + 1 − layer)``."""
    return decay ** (num_blocks + 1 - layer)


def _no_weight_decay_names(module: nn.Module) -> set[str]:
    from mimlens.engine import no_weight_decay_names

    return no_weight_decay_names(module)


def _add(groups: dict, key, name: str, param, scale: float, weight_decay: float) -> None:
    group = groups.setdefault(key, {"params": [], "param_names": [], "lr_scale": scale,
                                    "weight_decay": weight_decay})
    group["params"].append(param)
    group["param_names"].append(name)


def layer_decay_param_groups(backbone: nn.Module, weight_decay: float, layer_decay: float,
                             heads: nn.Module | None = None, *, prefix: str = "", heads_prefix: str = "head."
                             ) -> list[dict]:
    """Optimizer groups for ``backbone`` with layer-wise lr decay, plus ``heads`` at scale 1.

    Frozen parameters are left out. ``param_names`` lists the names of a group's parameters, ``prefix`` /
    ``heads_prefix`` prepended (pass the owning model's attribute path to match its ``named_parameters``).
    Backbones other than ViT/BEiT/Swin take ``layer_decay`` 1 only (every scale 1).
    """
    if not 0 < layer_decay <= 1:
        raise MimlensError(f"layer_decay must lie in (0, 1], got {layer_decay}")
    layout = backbone_layout(backbone)
    if layout is None and layer_decay != 1:
        raise MimlensError(f"layer_decay {layer_decay} needs a ViT, BEiT or Swin backbone (blocks or stages of "
                           f"blocks); {type(backbone).__name__} has neither: use layer_decay 1.0")
    num_blocks = sum(layout[1]) if layout else 0
    groups: dict = {}
    skip = _no_weight_decay_names(backbone)
    for name, param in backbone.named_parameters():
        if param.requires_grad:
            layer = layer_id(name, layout) if layout else 0
            scale = layer_scale(layer, num_blocks, layer_decay) if layout else 1.0
            decay = 0.0 if param.ndim <= 1 or name in skip else weight_decay
            _add(groups, (layer, decay), prefix + name, param, scale, decay)
    if heads is not None:
        skip = _no_weight_decay_names(heads)
        for name, param in heads.named_parameters():
            if param.requires_grad:
                decay = 0.0 if param.ndim <= 1 or name in skip else weight_decay
                _add(groups, ("heads", decay), heads_prefix + name, param, 1.0, decay)
    if not groups:
        raise MimlensError("the model has no trainable parameters")
    return list(groups.values())
