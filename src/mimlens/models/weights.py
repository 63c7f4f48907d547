"""Read checkpoint files safely and load them into a timm model with the key sets asserted.

Files are read with ``torch.load(weights_only=True)``, never full unpickling. Official training checkpoints
pickle their configuration; exactly two such types are allow-listed:

- ``argparse.Namespace`` (MAE, MoCo v3, DeiT, timm training scripts) — plain attributes, nothing runs;
- ``yacs.config.CfgNode`` (SimMIM, Swin) through :class:`YacsConfigAsDict`, a stand-in registered under that
  name, so yacs need not be installed and its code never runs: every node becomes an ``OrderedDict``.

Anything else in a pickle (functions, other classes) is refused with a :class:`MimlensError` naming it; a
damaged file is described by its size and first bytes. Every error is one line of mimlens's own words.

:func:`load_pretrained` gives ``timm:NAME[.TAG]`` with timm's pretrained weights, read through timm's own loader
from the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``); ``HF_HUB_OFFLINE=1`` never downloads.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import struct
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
from safetensors.torch import load_file
from torch import nn

from mimlens.errors import MimlensError
from mimlens.models.build import PRESETS, build_model, preprocessing, unknown_spec
from mimlens.models.convert import FORMATS, DoesNotFit, detect_format, source_normalisation, timm_family, to_timm

__all__ = [
    "YacsConfigAsDict", "fitting_presets", "head_prefixes", "load_checkpoint", "load_pretrained", "read_checkpoint",
]


class YacsConfigAsDict:
    """Unpickles a yacs ``CfgNode`` as an ``OrderedDict`` of its entries (its internal flags become attributes).

    ``torch.load(weights_only=True)`` only fills plain dicts, so creating the node as an ``OrderedDict`` is what
    lets a SimMIM config load without yacs and without running any of its code.
    """

    def __new__(cls, *args: Any) -> OrderedDict:  # type: ignore[misc]
        return OrderedDict()


_SAFE_GLOBALS = [argparse.Namespace, (YacsConfigAsDict, "yacs.config.CfgNode")]
# The object torch's restricted unpickler refused, in its message (absent when the file is merely damaged).
_REFUSED = re.compile(r"GLOBAL (?P<name>[\w.]+)|got <class '(?P<cls>[^']+)'>|unrecognized function (?P<fn>[\w.]+)")
# What torch.load raises for a damaged or foreign file.
_DAMAGED = (RuntimeError, EOFError, OSError, ValueError, LookupError, TypeError, AttributeError, struct.error)
_SHOWN = 3  # keys named in a one-line message


def read_checkpoint(path: str | os.PathLike) -> Any:
    """The object stored in a ``.safetensors`` file or a ``torch.save`` file, read without unsafe unpickling."""
    path = Path(path)
    if not path.is_file():
        raise MimlensError(f"checkpoint {path} does not exist")
    if not os.access(path, os.R_OK):
        raise MimlensError(f"checkpoint {path} cannot be read: permission denied")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except Exception:  # safetensors raises its own error types for damaged headers
            raise MimlensError(f"{path} is not a readable safetensors file: {_damage(path)}") from None
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _REFUSED.search(str(err))
        if refused is None:
            raise MimlensError(f"{path} is not a readable torch checkpoint: {_damage(path)}") from None
        name = next(group for group in refused.groups() if group)
        raise MimlensError(
            f"{path}: refused to unpickle {name}: mimlens never runs code from a checkpoint and reads only tensors, "
            "plain containers, argparse.Namespace and yacs CfgNode; if you trust the file, save just its state dict "
            "(torch.save or safetensors) and load that"
        ) from None
    except _DAMAGED:
        raise MimlensError(f"{path} is not a readable torch checkpoint: {_damage(path)}") from None


def _damage(path: Path) -> str:
    """What a file that cannot be read as a checkpoint looks like: empty, a damaged archive or pickle, or other."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    with path.open("rb") as file:
        head = file.read(8)
    if path.suffix == ".safetensors":
        return f"its header is damaged or the file is truncated ({size} bytes)"
    if head.startswith(b"PK\x03\x04"):
        return f"a damaged or truncated torch.save archive ({size} bytes)"
    if head.startswith(b"\x80"):
        return f"a damaged or truncated pickle ({size} bytes)"
    return f"neither a torch.save archive nor a pickle ({size} bytes, starting {head!r})"


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Key prefixes of the model's classifier module(s), headless (``Identity``) or not.

    From timm's ``get_classifier``: ``head.`` for ViT/BEiT, ``head.fc.`` for Swin, ``head.`` and ``head_dist.`` for
    distilled DeiTs.
    """
    get = getattr(model, "get_classifier", None)
    if get is None:
        return ()
    heads = get()
    heads = heads if isinstance(heads, tuple) else (heads,)
    names = {id(m): name for name, m in model.named_modules()}
    return tuple(f"{names[id(h)]}." for h in heads if id(h) in names)


@dataclass
class _Fit:
    """How converted weights meet a model: the classifier handling and the keys that stop loading."""

    ckpt_head: list[str]
    model_head: list[str]
    head_fits: bool
    missing: list[str]  # every model key the weights lack (classifier included)
    problems: dict[str, list[str]]  # "missing", "unexpected", "mismatched": the keys that stop loading

    @property
    def dropped_head(self) -> list[str]:
        return [] if self.head_fits else self.ckpt_head


def _fit(weights: Mapping[str, torch.Tensor], model: nn.Module) -> _Fit:
    """Every model key must come from the weights and every weight must be used, except for the classifier: a
    checkpoint without one leaves the model's as initialised, one that does not fit is dropped."""
    expected = model.state_dict()
    prefixes = head_prefixes(model)
    model_head = sorted(k for k in expected if prefixes and k.startswith(prefixes))
    ckpt_head = sorted(k for k in weights if prefixes and k.startswith(prefixes))
    head_fits = ckpt_head == model_head and all(weights[k].shape == expected[k].shape for k in ckpt_head)
    used = set(weights) - set([] if head_fits else ckpt_head)
    missing = sorted(set(expected) - used)
    return _Fit(ckpt_head, model_head, head_fits, missing, {
        "missing": [k for k in missing if head_fits or k not in model_head],
        "unexpected": sorted(used - set(expected)),
        "mismatched": sorted(k for k in used & set(expected) if weights[k].shape != expected[k].shape),
    })


def load_checkpoint(path: str | os.PathLike, model: nn.Module, *, moco_encoder: str = "base") -> dict[str, Any]:
    """Load a checkpoint of any supported format into ``model`` (in place) and say what happened.

    Key policy, asserted exactly (see :func:`_fit`); anything else raises a one-line :class:`MimlensError` with
    the counts, a few keys, a file listing all of them and the preset that fits the checkpoint, if one does.
    The model's ``pretrained_cfg`` mean and std become the source's when its origin says
    (:func:`mimlens.models.convert.source_normalisation`).

    Args:
        moco_encoder: for MoCo v3 checkpoints, ``"base"`` (default) or ``"momentum"`` encoder.

    Returns:
        a plain dict: ``source``, ``format``, ``format_description``, ``arch``, ``wrapper``, ``dropped_keys``
        (training-only keys and buffers), ``dropped_head_keys``, ``missing_keys`` (left as initialised),
        ``resized_keys``, ``head`` (what happened to the classifier), ``mean``, ``std``, ``normalisation`` (why),
        ``summary`` (lines to print) and the format-specific entries of :func:`mimlens.models.convert.to_timm`.
    """
    path = str(path)
    state = read_checkpoint(path)
    fmt = detect_format(state, path)
    try:
        weights, info = to_timm(state, fmt, model, path, moco_encoder=moco_encoder)
    except DoesNotFit as err:
        raise MimlensError(f"{err}; {_suggestion(state, fmt, path, moco_encoder)}") from None
    fit = _fit(weights, model)
    if any(fit.problems.values()):
        raise MimlensError(_mismatch(path, fmt, model, fit, weights, _suggestion(state, fmt, path, moco_encoder)))
    model.load_state_dict({k: v for k, v in weights.items() if k not in fit.dropped_head}, strict=False)
    source = source_normalisation(state, fmt, path)
    if source is not None:
        model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "mean": source[0], "std": source[1]}
    arch = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
    info = {"source": path, "format": fmt, "format_description": FORMATS[fmt], "arch": arch, **info,
            "missing_keys": fit.missing, "dropped_head_keys": fit.dropped_head, "head": _head_note(weights, model, fit),
            **_normalisation(model, source[2] if source else "the arch's own: the checkpoint does not say")}
    return {**info, "summary": _summary(info)}


def _head_note(weights: Mapping[str, torch.Tensor], model: nn.Module, fit: _Fit) -> str:
    classes = next((int(weights[k].shape[0]) for k in fit.ckpt_head if k.endswith("weight")), 0)
    if not fit.ckpt_head and not fit.model_head:
        return "none: neither the checkpoint nor the model has a classifier"
    if fit.head_fits:
        return f"loaded: the checkpoint's {classes}-class classifier"
    if not fit.ckpt_head:
        return f"the model's {model.num_classes}-class classifier is left as initialised: the checkpoint has none"
    target = f"the model's {model.num_classes} classes" if fit.model_head else "the headless model"
    return f"dropped: the checkpoint's {classes}-class classifier does not fit {target}"


def _normalisation(model: nn.Module, why: str) -> dict[str, Any]:
    stats = preprocessing(model)
    return {"mean": stats["mean"], "std": stats["std"], "normalisation": why}


def _summary(info: dict[str, Any]) -> list[str]:
    """What loading did, in lines a command can print."""
    extras = [f"weights under {info['wrapper']!r}"] if info.get("wrapper") else []
    extras += [f"{info['encoder']} encoder"] if info.get("encoder") else []
    triple = ", ".join(f"{v:.3g}" for v in info["mean"]), ", ".join(f"{v:.3g}" for v in info["std"])
    return [
        f"loaded {info['source']}: format {info['format']} ({info['format_description']})"
        + "".join(f", {e}" for e in extras),
        _counted("dropped", [*info["dropped_keys"], *info["dropped_head_keys"]], "not used by the model"),
        _counted("missing", info["missing_keys"], "left as initialised"),
        _counted("resized", info["resized_keys"], "interpolated to the model's size"),
        f"head: {info['head']}",
        f"normalisation: mean ({triple[0]}), std ({triple[1]}): {info['normalisation']}",
    ]


def _counted(verb: str, keys: list[str], why: str) -> str:
    return f"{verb} {len(keys)} key(s) ({why}): {_few(keys)}" if keys else f"{verb}: none"


def _few(items: list[str]) -> str:
    more = f", … (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _mismatch(path: str, fmt: str, model: nn.Module, fit: _Fit, weights: Mapping, suggestion: str) -> str:
    """One line: the counts and a few keys of each kind, the file with all of them, and what fits instead."""
    expected = model.state_dict()
    shapes = [f"{k} {tuple(weights[k].shape)} vs model {tuple(expected[k].shape)}" for k in fit.problems["mismatched"]]
    kinds = {"model keys missing from the checkpoint": fit.problems["missing"],
             "checkpoint keys the model lacks": fit.problems["unexpected"], "shapes differ": shapes}
    kinds = {kind: keys for kind, keys in kinds.items() if keys}
    parts = [f"{len(keys)} {kind} ({_few(keys)})" for kind, keys in kinds.items()]
    listing = _write_listing(path, kinds)
    return (f"{path} (format {fmt}) does not fit the arch's {type(model).__name__}: {'; '.join(parts)}; "
            f"all keys in {listing}; {suggestion}")


def _write_listing(path: str, kinds: dict[str, list[str]]) -> str:
    """A text file (in the temporary directory) with every key of every kind, for a one-line error to point to."""
    with tempfile.NamedTemporaryFile("w", prefix=f"mimlens-keys-{Path(path).stem}-", suffix=".txt",
                                     delete=False) as file:
        for kind, keys in kinds.items():
            file.write(f"# {len(keys)} {kind}\n" + "".join(f"{k}\n" for k in keys))
    return file.name


def _suggestion(state: Any, fmt: str, path: str, moco_encoder: str) -> str:
    fits = fitting_presets(state, fmt, path, moco_encoder=moco_encoder)
    run = Path(path).parent
    hint = f" (or load the run directory {run} itself)" if (run / "config.yaml").is_file() else ""
    if fits:
        return f"it fits the preset {' and '.join(fits)}: pass that as the arch{hint}"
    return f"no preset fits it: check the arch and its kwargs{hint}"


def fitting_presets(state: Any, fmt: str, path: str, *, moco_encoder: str = "base") -> list[str]:
    """The presets the checkpoint loads into under the key policy, headless and at their own size; each is built
    on the meta device (no memory, no initialisation cost) after a family check on the key names."""
    family = timm_family(state, fmt, path)
    names = []
    for name, preset in PRESETS.items():
        if family is None or not timm.models.is_model_in_modules(preset.timm_name, family):
            continue
        try:
            with torch.device("meta"):
                candidate = build_model(name)
            weights, _ = to_timm(state, fmt, candidate, path, moco_encoder=moco_encoder)
        except (MimlensError, RuntimeError, NotImplementedError):
            continue
        if not any(_fit(weights, candidate).problems.values()):
            names.append(name)
    return names


def load_pretrained(spec: str, *, img_size: int | tuple[int, int] | None = None, num_classes: int = 0,
                    pos_embed: str | None = None, seed: int | None = None,
                    **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """``timm:NAME[.TAG]`` built by timm with its pretrained weights, read from the Hugging Face cache (downloaded
    into it unless ``HF_HUB_OFFLINE=1``); preprocessing follows the tag's ``pretrained_cfg`` (mean, std, input size).

    Args:
        img_size: another input size (timm resamples the position embedding); default the tag's.
        num_classes: 0 (default) drops the classifier; the tag's number keeps it; another starts a new one.
        seed: initialises a new classifier from ``torch.manual_seed(seed)`` on a forked generator, as
            :func:`~mimlens.models.build.build_model` does; None draws from torch's global generator.
        **kwargs: further ``timm.create_model`` arguments (``pretrained_cfg_overlay`` included).

    Returns:
        the model and an info dict with the entries of :func:`load_checkpoint`; ``format`` is ``timm-pretrained``,
        ``hub`` the weights' hub id (or URL) and ``cache`` the cache directory.
    """
    name = spec[len("timm:"):] if spec.startswith("timm:") else ""
    if not name:
        raise MimlensError(f"pretrained weights come from timm tags: use timm:NAME[.TAG] (e.g. "
                           f"timm:vit_base_patch16_224.mae), not {spec!r}; presets are randomly initialised")
    if not timm.is_model(name):
        raise unknown_spec(spec)
    if not timm.is_model_pretrained(name):
        tags = timm.list_pretrained(f"{name.split('.')[0]}.*")
        tags = [t.split(".", 1)[1] for t in tags]
        raise MimlensError(f"timm has no pretrained weights named {name!r}"
                           + (f"; its tags: {', '.join(tags[:12])}" if tags else "; it has none for this model"))
    if pos_embed not in (None, "learned"):
        raise MimlensError(f"pos_embed={pos_embed!r} would replace the pretrained position embedding; leave it unset")
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    if img_size is not None:
        kwargs["img_size"] = img_size
        overlay["input_size"] = (3, *((img_size, img_size) if isinstance(img_size, int) else img_size))
    tag_cfg = {**timm.models.get_pretrained_cfg(name).to_dict(), **overlay}
    where = tag_cfg.get("hf_hub_id") or tag_cfg.get("url") or tag_cfg.get("file")
    cache = hub_constants.HF_HUB_CACHE if tag_cfg.get("hf_hub_id") else os.path.join(torch.hub.get_dir(), "checkpoints")
    try:
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = timm.create_model(name, pretrained=True, num_classes=num_classes,
                                      pretrained_cfg_overlay=overlay, **kwargs)
    except (OSError, EntryNotFoundError) as err:
        raise MimlensError(_not_available(spec, where, cache, err)) from None
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError):
        raise MimlensError(f"timm's pretrained weights for {spec} ({where}) do not fit the model built with "
                           f"{kwargs}: keep the architecture's sizes (img_size and num_classes may change)") from None
    return model, _pretrained_info(spec, model, tag_cfg, where, cache)


def _not_available(spec: str, where: str, cache: str, err: Exception) -> str:
    if isinstance(err, RepositoryNotFoundError):
        return f"pretrained weights for {spec}: the Hugging Face hub has no repository {where} (or it needs a login)"
    how = ("HF_HUB_OFFLINE=1 forbids downloading them" if hub_constants.HF_HUB_OFFLINE
           else "downloading them failed (no network?)")
    return (f"pretrained weights for {spec} ({where}) are not in the cache {cache} and {how}; fill the cache on a "
            "machine with network access and point HF_HOME at it (HF_HUB_OFFLINE=1 then reads only the cache)")


def _pretrained_info(spec: str, model: nn.Module, tag_cfg: dict[str, Any], where: str, cache: str) -> dict[str, Any]:
    """What timm's loader did: every weight is used (timm loads strictly) except a classifier that does not fit;
    position tables are resampled when the input size is not the tag's."""
    tag_classes = int(tag_cfg.get("num_classes") or 0)
    classifiers = tag_cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    head_kept = tag_classes > 0 and model.num_classes == tag_classes
    dropped = [] if head_kept or not tag_classes else [f"{c}.{p}" for c in classifiers for p in ("weight", "bias")]
    prefixes = head_prefixes(model)
    state = model.state_dict()
    missing = [] if head_kept else sorted(k for k in state if prefixes and k.startswith(prefixes))
    resized = []
    if tuple(tag_cfg["input_size"]) != tuple(timm.models.get_pretrained_cfg(spec[5:]).input_size):
        resized = sorted(k for k in state if re.search(r"(^|\.)(pos_embed|relative_position_bias_table)$", k))
    if head_kept:
        head = f"loaded: the pretrained {tag_classes}-class classifier"
    elif not tag_classes:
        head = "none: the pretrained weights have no classifier" + (
            f"; the model's {model.num_classes}-class one is left as initialised" if model.num_classes else "")
    else:
        target = f"the model's {model.num_classes} classes" if model.num_classes else "the headless model"
        head = f"dropped: the pretrained {tag_classes}-class classifier does not fit {target}"
    tag = model.pretrained_cfg.get("tag") or "default"
    info = {"source": spec, "format": "timm-pretrained", "format_description": f"timm's pretrained weights, tag {tag}",
            "arch": model.pretrained_cfg.get("architecture", spec[5:]), "hub": where, "cache": cache,
            "wrapper": None, "dropped_keys": [], "dropped_head_keys": dropped, "missing_keys": missing,
            "resized_keys": resized, "head": head, **_normalisation(model, f"the tag's pretrained_cfg ({tag})")}
    return {**info, "summary": _summary(info)}
