"""Foreign checkpoint layouts → timm key names: the one place that knows them.

Each checkpoint is first unwrapped and reduced to backbone weights according to its *format* (prefixes,
training-only keys, deterministic buffers), then handed to timm's own ``checkpoint_filter_fn`` of the
*model's* family, which already knows the rest: the official Swin/SwinV2 layout (downsample at the end of a
stage → start of the next, ``head`` → ``head.fc``), DeiT III layer scale, and resizing of absolute position
embeddings, patch embeddings and relative position bias tables (BEiT's 3 extra rows kept) for a new size.

Formats:

==============  ==========================================================================================
``timm``        timm key names, bare or under ``model`` / ``state_dict`` / ``module`` (timm, mimlens,
                released MAE encoders, DeiT, MoCo v3 after conversion)
``mae``         MAE pre-training checkpoint: timm ViT names plus ``mask_token`` and ``decoder_*``
``deit``        DeiT training output (``model_ema`` beside ``model``) or a distilled model (``dist_token``)
``mocov3``      MoCo v3: ``state_dict`` with ``module.base_encoder.`` / ``module.momentum_encoder.``
``beit``        BEiT layout (``q_bias``/``v_bias``, relative position bias with 3 extra rows, shared or per
                block, ``gamma_1/2``), under ``model`` or ``module``; also fine-tuned SimMIM ViTs
``simmim-vit``  SimMIM pre-training ViT: prefix ``encoder.``, BEiT layout, ``decoder.*`` and ``mask_token``
``swin``        official Swin layout (fine-tuned SimMIM Swin, Microsoft releases)
``swinv2``      official SwinV2 layout
``simmim-swin`` / ``simmim-swinv2``  SimMIM pre-training Swin / SwinV2: prefix ``encoder.``, official layout
==============  ==========================================================================================

The format is the layout; :func:`source_normalisation` reads the origin the file reveals (official code,
training arguments, the release layout) to give the mean and std its weights were trained with.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import beit, swin_transformer, swin_transformer_v2, vision_transformer
from torch import nn

from mimlens.errors import MimlensError

__all__ = ["FORMATS", "DoesNotFit", "detect_format", "source_normalisation", "timm_family", "to_timm", "unwrap"]

FORMATS: dict[str, str] = {
    "timm": "timm key names",
    "mae": "MAE pre-training checkpoint (encoder + decoder)",
    "deit": "DeiT (training output or distilled)",
    "mocov3": "MoCo v3 (base and momentum encoders)",
    "beit": "BEiT-style ViT",
    "simmim-vit": "SimMIM pre-training ViT (BEiT-style)",
    "swin": "official Swin layout",
    "swinv2": "official SwinV2 layout",
    "simmim-swin": "SimMIM pre-training Swin",
    "simmim-swinv2": "SimMIM pre-training SwinV2",
}

_WRAPPERS = ("model", "state_dict", "module")


class DoesNotFit(MimlensError):
    """The checkpoint cannot be converted for the model's architecture (another family or other sizes)."""

# The timm model class each foreign format converts into, with an example arch for error messages.
_FAMILY: dict[str, tuple[type[nn.Module], str]] = {
    "mae": (vision_transformer.VisionTransformer, "vit-base-224"),
    "deit": (vision_transformer.VisionTransformer, "timm:deit_base_distilled_patch16_224"),
    "mocov3": (vision_transformer.VisionTransformer, "vit-base-224"),
    "beit": (beit.Beit, "timm:beit_base_patch16_224"),
    "simmim-vit": (beit.Beit, "simmim-vit-base-224"),
    "swin": (swin_transformer.SwinTransformer, "swin-base-224"),
    "simmim-swin": (swin_transformer.SwinTransformer, "swin-base-224"),
    "swinv2": (swin_transformer_v2.SwinTransformerV2, "swinv2-base-192"),
    "simmim-swinv2": (swin_transformer_v2.SwinTransformerV2, "swinv2-base-192"),
}

# Keys that exist only for training (mask token, decoders, pre-training heads), per format.
_TRAINING_ONLY: dict[str, tuple[str, ...]] = {
    "mae": ("mask_token", "decoder_"),
    "beit": ("mask_token", "lm_head.", "cls_pt_layers."),
    "simmim-vit": ("mask_token",),
    "simmim-swin": ("mask_token",),
    "simmim-swinv2": ("mask_token",),
    "mocov3": ("head.",),  # the projector MLP replaces the classifier in MoCo v3's encoders
}

# Deterministic buffers that official code saves and timm recomputes.
_BUFFERS = re.compile(r"(^|\.)(relative_position_index|relative_coords_table|attn_mask)$")

# Every official repository behind these formats normalises with the ImageNet mean and std; timm's default
# configs for the same architectures do not always (e.g. ViT-B augreg uses 0.5), so loading records it.
_IMAGENET_FORMATS = ("mae", "deit", "mocov3", "simmim-vit", "swin", "swinv2", "simmim-swin", "simmim-swinv2")
_IMAGENET = (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))
_INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

_MOCO_ENCODERS = {"base": "module.base_encoder.", "momentum": "module.momentum_encoder."}


def unwrap(state: Any, path: str) -> tuple[str | None, dict[str, torch.Tensor]]:
    """The wrapper key (or None) and the mapping of tensors a checkpoint holds."""
    if _is_weights(state):
        return None, dict(state)
    if isinstance(state, Mapping):
        for key in _WRAPPERS:
            if _is_weights(state.get(key)):
                return key, dict(state[key])
        top = ", ".join(map(str, list(state)[:12]))
        raise MimlensError(
            f"{path}: no state dict found: expected a mapping of tensors at the top level or under "
            f"{', '.join(repr(w) for w in _WRAPPERS)}; top-level keys: {top}"
        )
    raise MimlensError(f"{path}: expected a mapping of tensor names to tensors, got {type(state).__name__}")


def detect_format(state: Any, path: str) -> str:
    """Name the layout of a loaded checkpoint (a key of :data:`FORMATS`) from its wrapper and key names."""
    _, weights = unwrap(state, path)
    keys = list(weights)

    def has(pattern: str) -> bool:
        return any(re.search(pattern, k) for k in keys)

    swinv2 = has(r"\.cpb_mlp\.|\.logit_scale$")
    if has(r"^module\.base_encoder\."):
        return "mocov3"
    if has(r"^encoder\.layers\."):
        return "simmim-swinv2" if swinv2 else "simmim-swin"
    if has(r"^encoder\.blocks\."):
        return "simmim-vit"
    if "layers.0.downsample.reduction.weight" in weights:
        return "swinv2" if swinv2 else "swin"
    if has(r"^decoder_(embed|blocks|norm|pred)"):
        return "mae"
    if "dist_token" in weights or (isinstance(state, Mapping) and "model_ema" in state):
        return "deit"
    if has(r"^rel_pos_bias\.|^blocks\.\d+\.attn\.(q_bias|relative_position_bias_table)$"):
        return "beit"
    return "timm"


def to_timm(
    state: Any, fmt: str, model: nn.Module, path: str, *, moco_encoder: str = "base"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Backbone weights of a checkpoint in ``model``'s timm key names, and what the conversion did.

    The returned info holds ``wrapper``, ``dropped_keys`` (training-only keys and buffers), ``resized_keys``
    (interpolated to the model's size), and per format: ``encoder`` (MoCo v3), ``rel_pos_bias`` (BEiT shared
    table copied into every block), ``pretrained_window_sizes`` (SwinV2).
    """
    if fmt not in FORMATS:
        raise MimlensError(f"{path}: unknown checkpoint format {fmt!r} (known: {', '.join(FORMATS)})")
    if moco_encoder not in _MOCO_ENCODERS:
        raise MimlensError(f"moco_encoder must be 'base' or 'momentum', got {moco_encoder!r}")
    if moco_encoder != "base" and fmt != "mocov3":
        raise MimlensError(f"moco_encoder={moco_encoder!r} is for MoCo v3 checkpoints; {path} is format {fmt}")
    _check_family(fmt, model, path)
    wrapper, weights = unwrap(state, path)
    info: dict[str, Any] = {"wrapper": wrapper}
    dropped: list[str] = []
    if fmt == "mocov3":
        weights = _take_prefix(weights, _MOCO_ENCODERS[moco_encoder], dropped)
        info["encoder"] = moco_encoder
    elif fmt.startswith("simmim-"):
        weights = _take_prefix(weights, "encoder.", dropped)
    if fmt in ("swinv2", "simmim-swinv2"):
        info["pretrained_window_sizes"] = _swinv2_pretrained_windows(weights, state)
    weights = _drop(weights, lambda k: k.startswith(_TRAINING_ONLY.get(fmt, ())) or bool(_BUFFERS.search(k)), dropped)
    if isinstance(model, beit.Beit):
        weights = _share_rel_pos_bias(weights, model, info)
    shapes = {k: v.shape for k, v in weights.items()}
    try:
        weights = _timm_filter(model)(weights, model)
    except (AttributeError, KeyError, RuntimeError, ValueError, AssertionError, TypeError, IndexError):
        raise DoesNotFit(
            f"{path} (format {fmt}) cannot be converted for the arch's {type(model).__name__}: "
            f"{_shape_clash(shapes, model)}"
        ) from None
    info["dropped_keys"] = sorted(dropped)
    info["resized_keys"] = sorted(k for k, v in weights.items() if k in shapes and shapes[k] != v.shape)
    return weights, info


def source_normalisation(state: Any, fmt: str, path: str) -> tuple[tuple, tuple, str] | None:
    """``(mean, std, reason)`` of the images the checkpoint's weights were trained on, when its origin says;
    None leaves the arch's own statistics.

    In order: an official foreign format (SimMIM, MAE, MoCo v3, DeiT, Swin) → ImageNet; BEiT's training arguments
    (``args.imagenet_default_mean_and_std``) → ImageNet or 0.5; a SimMIM/Swin yacs config → ImageNet; timm keys
    under ``model`` in a ``torch.save`` file (the DeiT, MAE-encoder and converted MoCo v3 releases) → ImageNet.
    Released BEiT files say nothing: timm's config for the arch decides (0.5 for BEiT, ImageNet for BEiT v2).
    """
    if fmt in _IMAGENET_FORMATS:
        return (*_IMAGENET, f"official {FORMATS[fmt]}")
    top = state if isinstance(state, Mapping) else {}
    flag = getattr(top.get("args"), "imagenet_default_mean_and_std", None)
    if isinstance(flag, bool):
        return (*(_IMAGENET if flag else _INCEPTION), f"its training args (imagenet_default_mean_and_std={flag})")
    if isinstance(top.get("config"), Mapping) and "MODEL" in top["config"]:
        return (*_IMAGENET, "its SimMIM/Swin training config")
    if fmt == "timm" and unwrap(state, path)[0] == "model":
        return (*_IMAGENET, "timm keys under 'model' in a torch file: the DeiT, MAE and MoCo v3 release layout")
    return None


def _is_weights(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def timm_family(state: Any, fmt: str, path: str) -> str | None:
    """The timm module (``vision_transformer``, ``beit``, ``swin_transformer``, ``swin_transformer_v2``) whose
    models the checkpoint converts into: fixed by a foreign format, guessed from key names for ``timm``."""
    if fmt in _FAMILY:
        return _FAMILY[fmt][0].__module__.rsplit(".", 1)[-1]
    keys = unwrap(state, path)[1]
    if any(re.search(r"^layers\.\d+\.blocks\.\d+\.attn\.(logit_scale|cpb_mlp)", k) for k in keys):
        return "swin_transformer_v2"
    if any(k.startswith("layers.") for k in keys):
        return "swin_transformer"
    if any(re.search(r"^rel_pos_bias\.|^blocks\.\d+\.attn\.(q_bias|relative_position_bias_table)$", k) for k in keys):
        return "beit"
    return "vision_transformer" if any(k.startswith("blocks.") for k in keys) else None


def _shape_clash(shapes: Mapping[str, torch.Size], model: nn.Module) -> str:
    """The checkpoint tensors whose shapes differ from the model's, counted, a few named."""
    expected = model.state_dict()
    clash = [f"{k} {tuple(s)} vs model {tuple(expected[k].shape)}" for k, s in sorted(shapes.items())
             if k in expected and tuple(s) != tuple(expected[k].shape)]
    if not clash:
        return "its tensors do not fit timm's conversion for this family; check the arch and its kwargs"
    more = f", … ({len(clash) - 3} more)" if len(clash) > 3 else ""
    return f"{len(clash)} tensors differ in shape ({', '.join(clash[:3])}{more}); check the arch and its kwargs"


def _check_family(fmt: str, model: nn.Module, path: str) -> None:
    if fmt not in _FAMILY:
        return
    family, example = _FAMILY[fmt]
    if not isinstance(model, family):
        raise DoesNotFit(
            f"{path} holds a checkpoint of format {fmt} ({FORMATS[fmt]}), which converts into a timm "
            f"{family.__name__} (an arch such as {example} builds one), but the arch builds a {type(model).__name__}"
        )


def _take_prefix(weights: dict[str, torch.Tensor], prefix: str, dropped: list[str]) -> dict[str, torch.Tensor]:
    dropped.extend(k for k in weights if not k.startswith(prefix))
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def _drop(weights: dict[str, torch.Tensor], unwanted: Callable[[str], bool], dropped: list[str]) -> dict:
    dropped.extend(k for k in weights if unwanted(k))
    return {k: v for k, v in weights.items() if not unwanted(k)}


def _share_rel_pos_bias(weights: dict[str, torch.Tensor], model: beit.Beit, info: dict[str, Any]) -> dict:
    """A shared BEiT relative position bias table copied into every block when the model has per-block tables
    (what BEiT's and SimMIM's fine-tuning code do)."""
    shared = "rel_pos_bias.relative_position_bias_table"
    if shared not in weights or model.rel_pos_bias is not None:
        return weights
    per_block = [f"blocks.{i}.attn.relative_position_bias_table" for i in range(len(model.blocks))]
    if per_block[0] not in model.state_dict():
        return weights
    table = weights.pop(shared)
    info["rel_pos_bias"] = "shared table copied into every block"
    return {**weights, **{k: table.clone() for k in per_block}}


def _swinv2_pretrained_windows(weights: dict[str, torch.Tensor], state: Any) -> list[int | None]:
    """Per stage, the window the continuous position bias MLP was trained for.

    A SimMIM config's ``MODEL.SWINV2.PRETRAINED_WINDOW_SIZES`` wins where non-zero; otherwise the checkpoint's
    own window, read from the shape of its ``relative_coords_table`` buffer (1, 2w−1, 2w−1, 2). Pass these as
    ``pretrained_window_sizes`` when building a model with another window, as SwinV2 fine-tuning does.
    """
    stages = sorted({int(m.group(1)) for k in weights if (m := re.match(r"layers\.(\d+)\.", k))})
    config = state.get("config") if isinstance(state, Mapping) else None
    configured = list(_get(config, "MODEL", "SWINV2", "PRETRAINED_WINDOW_SIZES") or [])
    windows: list[int | None] = []
    for stage in stages:
        table = weights.get(f"layers.{stage}.blocks.0.attn.relative_coords_table")
        window = (table.shape[1] + 1) // 2 if table is not None else None
        if stage < len(configured) and configured[stage]:
            window = int(configured[stage])
        windows.append(window)
    return windows


def _get(config: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(config, Mapping) or key not in config:
            return None
        config = config[key]
    return config


def _timm_filter(model: nn.Module) -> Callable[[dict, nn.Module], dict]:
    """timm's own remapping for the model's family (identity for other timm models)."""
    if isinstance(model, vision_transformer.VisionTransformer):
        return lambda weights, m: vision_transformer.checkpoint_filter_fn(weights, m, adapt_layer_scale=True)
    if isinstance(model, beit.Beit):
        return beit.checkpoint_filter_fn
    if isinstance(model, swin_transformer.SwinTransformer):
        return swin_transformer.checkpoint_filter_fn
    if isinstance(model, swin_transformer_v2.SwinTransformerV2):
        return swin_transformer_v2.checkpoint_filter_fn
    return lambda weights, m: weights
