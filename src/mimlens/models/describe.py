"""What a loaded model is, in words and records: :func:`load` (a MODEL spelling in eval mode, with the seed of a
random initialisation), :func:`describe_weights` (where the weights came from), :func:`loading_record` (what loading
did, as ``config.yaml`` and ``attention.json`` record it) and :func:`loading_lines` (the same, to print)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mimlens.errors import MimlensError

__all__ = ["describe_weights", "load", "loading_lines", "loading_record"]

# The key lists of a load, as ``loading_record`` counts and lists them.
KEY_LISTS = {"dropped": ("dropped_keys", "dropped_head_keys"), "missing": ("missing_keys",),
             "resized": ("resized_keys",)}


def describe_weights(info: dict[str, Any]) -> str:
    """``"random init"`` for ``timm:NAME`` and presets, else where the weights came from (and the training step
    of a run's weights, with the file when it is not the finished run's backbone)."""
    if info.get("format") == "init":
        return "random init"
    if info.get("format") == "timm-pretrained":
        return f"pretrained {info.get('hub') or info['source']}"
    if "run" not in info:
        encoder = f" ({info['encoder']} encoder)" if info.get("encoder") else ""
        return f"{info.get('format', 'checkpoint')} checkpoint {info.get('source', '')}".strip() + encoder
    text = f"run {info['source']}" + (f" at step {info['step']}" if "step" in info else "")
    if info.get("encoder"):
        text += f", {info['encoder']} encoder"
    if info.get("finished") is False:
        text += f" ({Path(info['weights_file']).name}; training has not finished)"
    return text


def load(spec: str, arch: str | None, seed: int | None = None, *, pretrained: bool = False, encoder: str = "base",
         **kwargs):
    """``(model, info)`` for a MODEL spelling, in eval mode; ``seed`` fixes a random initialisation, ``pretrained``
    reads timm's pretrained weights of a ``timm:NAME.TAG``, ``encoder`` picks MoCo v3's base or momentum encoder,
    ``kwargs`` are :func:`~mimlens.models.build_model` keywords (e.g. ``pos_embed``)."""
    from mimlens.models import load_model

    model, info = load_model(spec, arch, pretrained=pretrained, moco_encoder=encoder, seed=seed, **kwargs)
    if encoder != "base" and info.get("encoder") != encoder:
        raise MimlensError(f"encoder {encoder!r} is for MoCo v3 checkpoints, and {spec} is "
                           f"{describe_weights(info)}")
    if info.get("format") == "init":
        info["seed"] = seed
    return model.eval(), info


def loading_record(info: dict[str, Any], model) -> dict[str, Any]:
    """What loading did, as ``config.yaml`` and ``attention.json`` record it: the format (with the hub id and
    cache of pretrained weights, the MoCo v3 encoder), the number and full list of dropped, missing and
    resized keys, the classifier's handling, and the mean and std the images are normalised with, and why."""
    from mimlens.models import preprocessing

    prep = preprocessing(model)
    record = {key: info[key] for key in ("format", "format_description", "hub", "cache", "encoder", "wrapper")
              if info.get(key)}
    if info.get("format") != "init":
        lists = {key: list(info.get(key) or []) for keys in KEY_LISTS.values() for key in keys}
        record["counts"] = {kind: sum(len(lists[k]) for k in keys) for kind, keys in KEY_LISTS.items()}
        record.update(lists, head=info.get("head", "as the weights hold it"))
    why = "the architecture's own (random init)" if info.get("format") == "init" else "the model's own configuration"
    return {**record, "mean": list(prep["mean"]), "std": list(prep["std"]),
            "normalisation": info.get("normalisation", why)}


def loading_lines(info: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """What loading did, to print: the loader's own summary, else the mean and std used and why."""
    if info.get("summary"):
        return list(info["summary"])
    mean, std = (", ".join(f"{v:.3g}" for v in record[key]) for key in ("mean", "std"))
    return [f"normalisation: mean ({mean}), std ({std}): {record['normalisation']}"]
