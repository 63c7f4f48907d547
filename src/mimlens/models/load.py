"""Every MODEL spelling → ``(model, info)``, and the run-directory side of it (docs/architecture.md).

MODEL is ``timm:NAME`` or a preset (random init), a checkpoint file with ``arch`` (format detected and
converted to timm keys), or a run directory: ``RUN/config.yaml`` holds ``model: {name, kwargs}`` and
``RUN/backbone.safetensors`` the weights in timm key names. A run that has not finished gives its latest
snapshot or checkpoint, and a run's own ``checkpoints/last.pt`` or ``checkpoints/step_<N>.safetensors`` needs no
arch (``mimlens.models.snapshots``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from mimlens.config import load_yaml
from mimlens.errors import MimlensError
from mimlens.models.build import PRESETS, build_model, resolve_spec, unknown_spec
from mimlens.models.snapshots import load_run_weights, load_training_file, save_backbone
from mimlens.models.weights import load_checkpoint, load_pretrained, read_checkpoint

__all__ = ["BACKBONE_FILE", "load_model", "model_section", "save_backbone"]

BACKBONE_FILE = "backbone.safetensors"


def load_model(spec: str | os.PathLike, arch: str | None = None, *, moco_encoder: str = "base",
               pretrained: bool = False, **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Build or load the model a MODEL spelling names.

    Args:
        spec: ``timm:NAME``, a preset name, a checkpoint file or a run directory.
        arch: for a checkpoint file, the preset, ``timm:NAME`` or bare timm name it belongs to (required);
            not allowed otherwise.
        moco_encoder: for MoCo v3 checkpoints, ``"base"`` or ``"momentum"``.
        pretrained: for ``timm:NAME[.TAG]``, timm's pretrained weights from the Hugging Face cache
            (:func:`~mimlens.models.weights.load_pretrained`).
        **overrides: :func:`build_model` arguments (``img_size``, ``num_classes``, ``pos_embed``, ``seed``, timm
            kwargs); for a run directory they override its ``model.kwargs``.

    Returns:
        the model (eval mode is left to the caller) and a plain ``info`` dict: ``source``, ``format``
        (``"init"`` for random initialisation) and, for loaded weights, what :func:`load_checkpoint` reports.
    """
    spec = os.fspath(spec)
    if pretrained:
        if arch is not None:
            raise MimlensError(f"arch={arch!r} is only for checkpoint files; {spec!r} names the model itself")
        return load_pretrained(spec, **overrides)
    if spec in PRESETS or spec.startswith("timm:"):
        if arch is not None:
            raise MimlensError(f"arch={arch!r} is only for checkpoint files; {spec!r} names the model itself")
        return build_model(spec, **overrides), {"source": spec, "format": "init"}
    path = Path(spec)
    if path.is_dir():
        if arch is not None:
            raise MimlensError(f"arch={arch!r} is only for checkpoint files; run directory {path} names its model")
        return _load_run(path, moco_encoder, overrides)
    if path.is_file():
        # a run's last.pt, or a snapshot inside RUN/checkpoints
        trained = load_training_file(path, arch, overrides, moco_encoder)
        if trained is not None:
            return trained
        if arch is None:
            read_checkpoint(path)  # a damaged file is named as such, not as one that lacks an arch
            raise MimlensError(
                f"checkpoint {path} needs an arch: the preset or timm model it belongs to (e.g. vit-base-224, "
                f"timm:deit_small_patch16_224)"
            )
        model = build_model(arch if arch in PRESETS or arch.startswith("timm:") else f"timm:{arch}", **overrides)
        return model, load_checkpoint(path, model, moco_encoder=moco_encoder)
    if os.sep in spec or path.suffix:
        raise MimlensError(f"model {spec!r}: no such file or directory")
    raise unknown_spec(spec)


def _load_run(run: Path, moco_encoder: str, overrides: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    config = run / "config.yaml"
    if not config.is_file():
        raise MimlensError(f"run directory {run} has no config.yaml (expected one with model: {{name, kwargs}})")
    section = load_yaml(config).get("model")
    if not isinstance(section, dict) or not isinstance(section.get("name"), str):
        raise MimlensError(f"{config}: expected a 'model' section with a 'name' string and optional 'kwargs' mapping")
    kwargs = section.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise MimlensError(f"{config}: model.kwargs must be a mapping, got {type(kwargs).__name__}")
    model = build_model(section["name"], **{**kwargs, **overrides})
    info = load_run_weights(run, model, run / BACKBONE_FILE, moco_encoder)
    return model, {**info, "source": str(run), "run": {"name": section["name"], "kwargs": kwargs}}


def model_section(name: str, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run config's ``model`` entry, ``{"name", "kwargs"}``, such that ``build_model(name, **kwargs)``
    rebuilds the model; tuples become lists so that it is plain YAML."""
    resolve_spec(name)
    plain = {str(k): list(v) if isinstance(v, tuple) else v for k, v in (kwargs or {}).items()}
    try:
        yaml.safe_dump(plain)
    except yaml.YAMLError as err:
        raise MimlensError(f"model kwargs for {name!r} must be plain YAML values: {err}") from None
    return {"name": name, "kwargs": plain}
