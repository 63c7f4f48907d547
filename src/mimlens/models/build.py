"""Build backbones from timm names or from the project's presets, always randomly initialised.

A model spec is ``timm:NAME`` (any timm architecture, ``pretrained=False``) or a preset name from
:data:`PRESETS`. Presets are plain timm models with fixed keyword arguments, so every timm helper (loaders,
``forward_intermediates``, ``group_matcher``) keeps working and weights keep timm's key names.
"""

from __future__ import annotations

import difflib
from typing import Any

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_model_data_config
from torch import nn

from mimlens.errors import MimlensError
from mimlens.model_names import PRESETS, Preset
from mimlens.models.pos_embed import use_sincos_pos_embed

__all__ = ["PRESETS", "Preset", "build_model", "preprocessing", "resolve_spec", "unknown_spec"]


_POS_EMBEDS = ("learned", "sincos")


def resolve_spec(spec: str) -> Preset:
    """The preset a spec names; ``timm:NAME`` gives one without kwargs or size."""
    if spec in PRESETS:
        return PRESETS[spec]
    if spec.startswith("timm:") and timm.is_model(spec[len("timm:"):]):
        return Preset(spec[len("timm:"):], None, f"timm {spec[len('timm:'):]}")
    raise unknown_spec(spec)


def unknown_spec(spec: str) -> MimlensError:
    """The error for a name that is neither a preset nor a timm model, listing close names."""
    if spec.startswith("timm:"):
        name = spec[len("timm:"):]
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; close timm names: {', '.join(close)}" if close else ""
        return MimlensError(f"unknown timm model {name!r} in {spec!r}{hint}")
    close = difflib.get_close_matches(spec, list(PRESETS), n=3, cutoff=0.5)
    hint = f"close presets: {', '.join(close)}" if close else f"presets: {', '.join(PRESETS)}"
    if timm.is_model(spec):
        hint = f"did you mean timm:{spec}?"
    return MimlensError(f"unknown model {spec!r}: expected a preset or timm:NAME ({hint})")


def build_model(
    spec: str, *, img_size: int | None = None, num_classes: int = 0, pos_embed: str | None = None,
    seed: int | None = None, **overrides: Any
) -> nn.Module:
    """A randomly initialised timm model.

    Args:
        spec: ``timm:NAME`` or a preset name from :data:`PRESETS`.
        img_size: input side in pixels; default the preset's (or timm's for ``timm:NAME``).
        num_classes: classifier outputs; 0 (default) gives a headless backbone.
        pos_embed: ``"sincos"`` replaces a ViT's learned absolute position embedding by the fixed 2-D sin-cos
            one (frozen); ``"learned"`` or None keeps timm's.
        seed: initialise from ``torch.manual_seed(seed)`` on a forked CPU generator (the global one is left as
            it was), so one seed always gives the same weights; None draws from torch's global generator.
        **overrides: further keyword arguments for ``timm.create_model`` (they override the preset's).

    Presets normalise inputs with the ImageNet mean and std (recorded in ``pretrained_cfg``, read by
    :func:`preprocessing`).
    """
    if "pretrained" in overrides:
        raise MimlensError("build_model never downloads weights (pretrained=False always); load a checkpoint file")
    if pos_embed not in (None, *_POS_EMBEDS):
        raise MimlensError(f"pos_embed must be one of {', '.join(_POS_EMBEDS)}, got {pos_embed!r}")
    preset = resolve_spec(spec)
    kwargs = {**preset.kwargs, **overrides}
    img_size = img_size or preset.img_size
    overlay: dict[str, Any] = {}
    if spec in PRESETS:
        overlay.update(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    if img_size is not None:
        kwargs["img_size"] = img_size
        overlay["input_size"] = (3, *_pair(img_size))
    try:
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = timm.create_model(
                preset.timm_name, pretrained=False, num_classes=num_classes, pretrained_cfg_overlay=overlay, **kwargs
            )
    except (TypeError, ValueError, AssertionError) as err:
        raise MimlensError(f"cannot build {spec!r} with {kwargs}: {err}") from None
    _check_patch_divides(model, spec)
    if pos_embed == "sincos":
        use_sincos_pos_embed(model)
    return model


def _check_patch_divides(model: nn.Module, spec: str) -> None:
    """timm silently floors a side the patch does not divide (a 30 px image on 8 px patches is a 3×3 grid that
    drops 6 px); refuse it instead, naming the sizes that work."""
    embed = getattr(model, "patch_embed", None)
    if embed is None or getattr(embed, "img_size", None) is None:
        return
    for side, patch in zip(_pair(embed.img_size), _pair(embed.patch_size), strict=True):
        if side % patch:
            lower, upper = side - side % patch, side - side % patch + patch
            sizes = f"{lower} or {upper}" if lower else f"{upper}"
            raise MimlensError(f"image size {side} px is not a multiple of the {patch} px patch of {spec!r}: "
                               f"use {sizes} px (model.kwargs.img_size / --img-size)")


def preprocessing(model: nn.Module) -> dict[str, Any]:
    """What a model expects: ``mean`` and ``std`` (RGB, inputs scaled to [0, 1]) and ``img_size``.

    ``img_size`` is an int for square inputs, else (height, width); it comes from the patch embedding when the
    model has one (the size it was built for), else from timm's data config.
    """
    cfg = resolve_model_data_config(model)
    size = getattr(getattr(model, "patch_embed", None), "img_size", None) or cfg["input_size"][1:]
    height, width = _pair(size)
    return {
        "mean": tuple(float(m) for m in cfg["mean"]),
        "std": tuple(float(s) for s in cfg["std"]),
        "img_size": height if height == width else (height, width),
    }


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
