"""Weights that only ``analyze`` could load as given, written as a run folder every command reads."""

from __future__ import annotations

from pathlib import Path

from mimlens.study.spec import ModelSpec


def export_weights(model: ModelSpec, out: Path) -> None:
    """``out/config.yaml`` (the ``model`` section that rebuilds the architecture, the weights in words and what
    loading did) and ``out/backbone.safetensors``: timm's pretrained weights of a ``timm:NAME.TAG``, a MoCo v3
    momentum encoder, or the seeded random initialisation of a preset or ``timm:NAME`` (built with the model's
    ``kwargs``)."""
    from mimlens.config import save_config
    from mimlens.models.describe import describe_weights, load, loading_record
    from mimlens.models.load import model_section
    from mimlens.models.snapshots import save_backbone

    encoder, info = load(model.source, model.arch, model.seed, pretrained=model.pretrained, encoder=model.encoder,
                         **model.kwargs)
    name = model.arch or model.source
    if name.startswith("timm:"):
        name = name.split(".")[0]  # the architecture without its pretrained tag
    save_backbone(encoder, out / "backbone.safetensors")
    save_config({"model": model_section(name, model.kwargs), "weights": describe_weights(info),
                 "loading": loading_record(info, encoder)}, out)
