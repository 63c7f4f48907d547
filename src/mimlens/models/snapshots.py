"""The backbone of a training run at any step: periodic snapshots, and the weights of its latest checkpoint.

Layout of a run directory ``RUN`` (``docs/pretrain.md``):

- ``RUN/backbone.safetensors``: the final encoder, written when the run finishes;
- ``RUN/checkpoints/step_<N>.safetensors``: snapshots of the encoder after ``N`` optimiser steps (timm key names,
  no classifier), written by :func:`save_snapshot` every ``train.snapshot_every`` steps;
- ``RUN/checkpoints/last.pt``: the resumable training checkpoint, a dict with ``model`` (the objective's state
  dict, the backbone under ``encoder.``), ``step`` and ``config`` (with its ``model: {name, kwargs}`` section).

A run that is still training or was interrupted has no ``backbone.safetensors``: its weights are the snapshot or
checkpoint with the highest step (a snapshot on a tie: it is the smaller file).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from mimlens.errors import MimlensError
from mimlens.io import save_bytes
from mimlens.models.build import build_model
from mimlens.models.weights import head_prefixes, load_checkpoint

__all__ = ["LAST_CHECKPOINT", "checkpoint_step", "list_snapshots", "load_run_weights", "load_training_file",
           "save_snapshot", "snapshot_path"]

CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.pt"
ENCODER = "encoder."
MOMENTUM_ENCODER = "momentum_encoder."  # MoCo v3's, in its objective's state
_SNAPSHOT = re.compile(r"^step_(\d+)\.safetensors$")


def save_backbone(model: nn.Module, path: str | os.PathLike, *, head: bool = False) -> Path:
    """Write the model's state dict in timm key names as safetensors, atomically; the classifier only if ``head``."""
    prefixes = () if head else head_prefixes(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if not (prefixes and k.startswith(prefixes))}
    arch = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
    return save_bytes(safetensors_bytes(state, metadata={"format": "pt", "architecture": arch}), path)


def snapshot_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{int(step)}.safetensors"


def save_snapshot(encoder: nn.Module, run_dir: str | os.PathLike, step: int) -> Path:
    """Write ``RUN/checkpoints/step_<step>.safetensors``: the encoder in timm key names, no classifier (atomic)."""
    if int(step) < 0:
        raise MimlensError(f"snapshot step {step}: expected a step count >= 0")
    return save_backbone(encoder, snapshot_path(run_dir, step))


def list_snapshots(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every backbone snapshot of a run, by increasing step (empty without any)."""
    folder = Path(run_dir) / CHECKPOINTS
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.safetensors") if (m := _SNAPSHOT.match(p.name))]
    return sorted(found)


def _training_state(path: Path) -> dict[str, Any] | None:
    """The contents of a mimlens training checkpoint (memory-mapped), or None for any other file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, OSError, EOFError):
        return None
    if not isinstance(state, dict) or not {"model", "step", "config"} <= set(state):
        return None
    section = state["config"].get("model") if isinstance(state["config"], dict) else None
    if not isinstance(section, dict) or not isinstance(section.get("name"), str):
        return None
    return state


def checkpoint_step(path: str | os.PathLike) -> int:
    """The optimiser step a training checkpoint (``last.pt``) was written at."""
    state = _training_state(Path(path))
    if state is None:
        raise MimlensError(f"{path} is not a mimlens training checkpoint (a dict with model, step and config)")
    return int(state["step"])


def _load_encoder(state: dict[str, Any], model: nn.Module, path: Path, moco_encoder: str = "base") -> dict[str, Any]:
    """Load the ``encoder.`` part of a training checkpoint's objective into ``model`` (MoCo v3's
    ``momentum_encoder.`` with ``moco_encoder="momentum"``); only head keys may differ. Returns the info entry
    naming a momentum encoder (empty for the base one)."""
    prefix = ENCODER if moco_encoder == "base" else MOMENTUM_ENCODER
    weights = {k.removeprefix(prefix): v for k, v in state["model"].items() if k.startswith(prefix)}
    prefixes = head_prefixes(model)
    weights = {k: v for k, v in weights.items() if not (prefixes and k.startswith(prefixes))}
    if not weights and moco_encoder != "base":
        raise MimlensError(f"{path}: its model state has no '{prefix}' keys: encoder {moco_encoder!r} is for MoCo v3 "
                           "runs")
    if not weights:
        raise MimlensError(f"{path}: its model state has no '{ENCODER}' keys: not a checkpoint of a backbone objective")
    expected = model.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                  for k, v in weights.items() if k in expected and v.shape != expected[k].shape]
    missing, unexpected = model.load_state_dict(weights, strict=False) if not mismatched else ([], [])
    missing = [k for k in missing if not (prefixes and k.startswith(prefixes))]
    if mismatched or missing or unexpected:
        raise MimlensError(f"{path}: the encoder does not fit the model of its own config (missing {missing[:10]}, "
                           f"unexpected {unexpected[:10]}, shape mismatch {mismatched[:10]})")
    return {"encoder": moco_encoder} if moco_encoder != "base" else {}


def _build(section: dict[str, Any], where: Path, overrides: dict[str, Any]) -> nn.Module:
    kwargs = section.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise MimlensError(f"{where}: model.kwargs must be a mapping, got {type(kwargs).__name__}")
    return build_model(section["name"], **{**kwargs, **overrides})


def load_training_file(path: Path, arch: str | None, overrides: dict[str, Any],
                       moco_encoder: str = "base") -> tuple[nn.Module, dict] | None:
    """``(model, info)`` for a run's own weights file — a training checkpoint (its config names the model) or,
    without ``arch``, a snapshot inside ``RUN/checkpoints/`` (``RUN/config.yaml`` names it) — else None.

    ``info`` holds ``source``, ``format`` (``training-checkpoint`` or ``snapshot``), ``step`` and ``run``.
    """
    from mimlens.config import load_yaml

    state = _training_state(path) if path.suffix != ".safetensors" else None
    if state is not None:
        section = state["config"]["model"]
        if arch is not None and arch != section["name"]:
            raise MimlensError(f"{path} is a mimlens training checkpoint of {section['name']!r} (its config says so): "
                               f"drop --arch {arch}, or give the arch it was trained with")
        model = _build(section, path, overrides)
        encoder = _load_encoder(state, model, path, moco_encoder)
        return model, {"source": str(path), "format": "training-checkpoint", "step": int(state["step"]), **encoder,
                       "run": {"name": section["name"], "kwargs": section.get("kwargs") or {}}}
    match = _SNAPSHOT.match(path.name)
    config = path.parent.parent / "config.yaml"
    if arch is not None or match is None or path.parent.name != CHECKPOINTS or not config.is_file():
        return None
    section = load_yaml(config).get("model")
    if not isinstance(section, dict) or not isinstance(section.get("name"), str):
        raise MimlensError(f"{config}: expected a 'model' section with a 'name' string, to rebuild the snapshot {path}")
    model = _build(section, config, overrides)
    info = load_checkpoint(path, model)
    return model, {**info, "format": "snapshot", "step": int(match.group(1)),
                   "run": {"name": section["name"], "kwargs": section.get("kwargs") or {}}}


def load_run_weights(run: Path, model: nn.Module, backbone: Path, moco_encoder: str = "base") -> dict[str, Any]:
    """Load a run's weights into ``model``: ``backbone`` when the run finished, else its latest snapshot or
    checkpoint; MoCo v3's momentum encoder (``moco_encoder="momentum"``) from ``RUN/checkpoints/last.pt``. Returns
    :func:`load_checkpoint`'s info with ``weights_file``, ``finished`` and ``step`` (when known)."""
    last = run / CHECKPOINTS / LAST_CHECKPOINT
    state = _training_state(last) if moco_encoder != "base" and last.is_file() else None
    if state is not None:  # the momentum encoder is in the checkpoint only
        info = {"source": str(last), "format": "training-checkpoint", **_load_encoder(state, model, last, moco_encoder)}
        return {**info, "weights_file": str(last), "finished": backbone.is_file(), "step": int(state["step"])}
    if backbone.is_file():
        info = load_checkpoint(backbone, model, moco_encoder=moco_encoder)
        step = {"step": checkpoint_step(last)} if last.is_file() else {}
        return {**info, "weights_file": str(backbone), "finished": True, **step}
    candidates = [(step, 1, path) for step, path in list_snapshots(run)]
    state = _training_state(last) if last.is_file() else None
    if state is not None:
        candidates.append((int(state["step"]), 0, last))
    if not candidates:
        raise MimlensError(f"run directory {run} has no {backbone.name} (written when training finishes) and no "
                           f"checkpoint yet ({CHECKPOINTS}/{LAST_CHECKPOINT} or {CHECKPOINTS}/step_<N>.safetensors)")
    step, _, path = max(candidates)
    if path == last:
        _load_encoder(state, model, path)
        info = {"source": str(path), "format": "training-checkpoint"}
    else:
        info = load_checkpoint(path, model, moco_encoder=moco_encoder)
    return {**info, "weights_file": str(path), "finished": False, "step": step}
