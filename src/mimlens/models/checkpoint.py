"""Read checkpoint files safely and load them into a timm model with the key sets asserted.

Files are read with ``torch.load(weights_only=True)``, never full unpickling. Official training checkpoints
pickle their configuration; exactly two such types are allow-listed:

- ``argparse.Namespace`` (MAE, MoCo v3, DeiT, timm training scripts) — plain attributes, nothing runs;
- ``yacs.config.CfgNode`` (SimMIM, Swin) through :class:`YacsConfigAsDict`, a stand-in registered under that
  name, so yacs need not be installed and its code never runs: every node becomes an ``OrderedDict``.

Anything else in a pickle (functions, other classes) is refused with a :class:`MimlensError` naming it.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from mimlens.errors import MimlensError
from mimlens.models.convert import detect_format, to_timm

__all__ = ["YacsConfigAsDict", "head_prefixes", "load_checkpoint", "read_checkpoint"]


class YacsConfigAsDict:
    """Unpickles a yacs ``CfgNode`` as an ``OrderedDict`` of its entries (its internal flags become attributes).

    ``torch.load(weights_only=True)`` only fills plain dicts, so creating the node as an ``OrderedDict`` is what
    lets a SimMIM config load without yacs and without running any of its code.
    """

    def __new__(cls, *args: Any) -> OrderedDict:  # type: ignore[misc]
        return OrderedDict()


_SAFE_GLOBALS = [argparse.Namespace, (YacsConfigAsDict, "yacs.config.CfgNode")]
# What the restricted unpickler says when it meets a disallowed object (as opposed to a damaged file).
_REFUSED = re.compile(r"Unsupported global|unrecognized function|Can only")


def read_checkpoint(path: str | os.PathLike) -> Any:
    """The object stored in a ``.safetensors`` file or a ``torch.save`` file, read without unsafe unpickling."""
    path = Path(path)
    if not path.is_file():
        raise MimlensError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except Exception as err:  # safetensors raises its own error types for damaged headers
            raise MimlensError(f"{path} is not a readable safetensors file: {err}") from None
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(str(err))
        if not _REFUSED.search(reason):
            raise MimlensError(f"{path} is not a readable torch checkpoint: {reason}") from None
        raise MimlensError(
            f"{path}: refused to unpickle it: {reason}. mimlens reads checkpoints with torch.load(weights_only=True) "
            "and allows only argparse.Namespace and yacs CfgNode besides tensors; if you trust the file, re-save "
            "just its state dict"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise MimlensError(f"{path} is not a readable torch checkpoint: {str(err) or type(err).__name__}") from None


def _unpickler_reason(message: str) -> str:
    """The restricted unpickler's own reason inside torch's long advice text."""
    _, _, reason = message.partition("WeightsUnpickler error:")
    reason = reason.split("Check the documentation")[0]
    return " ".join(reason.split()) or message


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


def load_checkpoint(path: str | os.PathLike, model: nn.Module, *, moco_encoder: str = "base") -> dict[str, Any]:
    """Load a checkpoint of any supported format into ``model`` (in place) and say what happened.

    Key policy, asserted exactly: every model key must come from the checkpoint and every converted checkpoint
    key must be used, with one exception for the classifier: when the checkpoint has no head, the model's head
    keys stay as initialised (``missing_keys``); when the checkpoint's head does not fit (the model is headless or
    has another number of classes), it is dropped (``dropped_head_keys``). Anything else raises a
    :class:`MimlensError` listing the keys and the file.

    Args:
        moco_encoder: for MoCo v3 checkpoints, ``"base"`` (default) or ``"momentum"`` encoder.

    Returns:
        a plain dict: ``source``, ``format``, ``arch``, ``missing_keys``, ``dropped_head_keys``,
        ``dropped_keys``, ``resized_keys``, ``wrapper`` and the format-specific entries of
        :func:`mimlens.models.convert.to_timm`.
    """
    path = str(path)
    state = read_checkpoint(path)
    fmt = detect_format(state, path)
    weights, info = to_timm(state, fmt, model, path, moco_encoder=moco_encoder)
    expected = model.state_dict()
    prefixes = head_prefixes(model)
    model_head = {k for k in expected if k.startswith(prefixes)} if prefixes else set()
    ckpt_head = {k for k in weights if k.startswith(prefixes)} if prefixes else set()
    head_fits = ckpt_head == model_head and all(weights[k].shape == expected[k].shape for k in ckpt_head)
    dropped_head = [] if head_fits else sorted(ckpt_head)
    for k in dropped_head:
        del weights[k]
    missing = sorted(set(expected) - set(weights))
    wrong_missing = [k for k in missing if head_fits or k not in model_head]
    unexpected = sorted(set(weights) - set(expected))
    mismatched = sorted(k for k in set(weights) & set(expected) if weights[k].shape != expected[k].shape)
    if wrong_missing or unexpected or mismatched:
        raise MimlensError(_key_report(path, fmt, model, wrong_missing, unexpected, mismatched, weights, expected))
    model.load_state_dict(weights, strict=False)
    if "mean" in info:
        model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "mean": info["mean"], "std": info["std"]}
    arch = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
    return {"source": path, "format": fmt, "arch": arch, "missing_keys": missing, "dropped_head_keys": dropped_head,
            **info}


def _key_report(path: str, fmt: str, model: nn.Module, missing: list[str], unexpected: list[str],
                mismatched: list[str], weights: Mapping, expected: Mapping) -> str:
    lines = [f"{path} (format {fmt}) does not fit {type(model).__name__} after conversion to timm keys:"]
    if missing:
        lines.append(f"  missing from the checkpoint ({len(missing)}): {_listing(missing)}")
    if unexpected:
        lines.append(f"  unexpected in the checkpoint ({len(unexpected)}): {_listing(unexpected)}")
    if mismatched:
        shapes = [f"{k} {tuple(weights[k].shape)} vs model {tuple(expected[k].shape)}" for k in mismatched]
        lines.append(f"  shape mismatch ({len(mismatched)}): {_listing(shapes)}")
    lines.append("  check that the arch (and its kwargs) matches the checkpoint")
    return "\n".join(lines)


def _listing(items: list[str], limit: int = 40) -> str:
    more = f", … and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
