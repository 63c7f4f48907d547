"""Configuration: command-line flags override a ``--config`` YAML, which overrides defaults.

Configs are plain nested dicts (never pickled objects), saved as ``config.yaml`` in every run.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from mimlens.errors import MimlensError
from mimlens.io import save_text


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MimlensError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise MimlensError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise MimlensError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def merge(base: dict[str, Any], override: dict[str, Any], *, where: str = "config") -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base``; unknown keys are an error."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in out:
            known = ", ".join(sorted(out))
            raise MimlensError(f"{where}: unknown key {key!r} (expected one of: {known})")
        if isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = merge(out[key], value, where=f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


# A length in steps and the same length in epochs: setting one in a layer clears the other.
EXCLUSIVE = (("train", "steps", "epochs"), ("optim", "warmup_steps", "warmup_epochs"),
             ("optim", "decay_steps", "decay_epochs"))


def resolve(defaults: dict[str, Any], config_path: str | Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """defaults ← YAML file ← flags (dotted keys; a value of None is 'not given' and ignored).

    ``model.kwargs`` takes any key (timm keywords). Of a length in steps and the same length in epochs
    (:data:`EXCLUSIVE`), the highest layer that sets one decides and the other is cleared. A ``resolved``
    section (what a run's ``config.yaml`` records about itself) is ignored, so a run's config can be reused.
    """
    cfg = copy.deepcopy(defaults)
    layers = []
    if config_path is not None:
        layer = load_yaml(config_path)
        layer.pop("resolved", None)
        kwargs = (layer.get("model") or {}).get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise MimlensError(f"{config_path}: model.kwargs must be a mapping, got {type(kwargs).__name__}")
        if isinstance(cfg.get("model"), dict):
            cfg["model"]["kwargs"] = {**dict.fromkeys(kwargs), **(cfg["model"].get("kwargs") or {})}
        cfg = merge(cfg, layer, where=str(config_path))
        layers.append(layer)
    given = _unflatten({k: v for k, v in flags.items() if v is not None})
    kwargs = (given.get("model") or {}).get("kwargs") or {}
    if kwargs and isinstance(cfg.get("model"), dict):
        cfg["model"]["kwargs"] = {**dict.fromkeys(kwargs), **(cfg["model"].get("kwargs") or {})}
    cfg = merge(cfg, given, where="command line")
    layers.append(given)
    decided = set()
    for layer in reversed(layers):  # the higher layer decides
        for section, steps, epochs in EXCLUSIVE:
            values = layer.get(section) or {}
            if section not in cfg or (section, steps) in decided or (values.get(steps) is None
                                                                        and values.get(epochs) is None):
                continue
            decided.add((section, steps))
            if values.get(epochs) is None:
                cfg[section][epochs] = None
            elif values.get(steps) is None:
                cfg[section][steps] = None
    return cfg


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 1e-3}`` → ``{"optim": {"lr": 1e-3}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def save_config(cfg: dict[str, Any], run_dir: str | Path) -> Path:
    return save_text(yaml.safe_dump(cfg, sort_keys=False), Path(run_dir) / "config.yaml")
