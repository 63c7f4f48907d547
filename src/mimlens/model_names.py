"""Model names checked without torch or timm: the presets (:data:`PRESETS`) and :func:`check_model_spelling`,
which every command runs on its MODEL before the heavy imports, so that a typo is refused at once.

``mimlens.models`` builds what these names describe and checks ``timm:NAME`` against timm's registry; here a
``timm:NAME`` is refused only when NAME appears nowhere in timm's model files.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimlens.errors import MimlensError


@dataclass(frozen=True)
class Preset:
    """A timm architecture with fixed keyword arguments and the image side it is built for."""

    timm_name: str
    img_size: int | None
    summary: str
    kwargs: dict[str, Any] = field(default_factory=dict)


_SWIN_TINY = dict(window_size=4, embed_dim=48, depths=(2, 2, 6), num_heads=(3, 6, 12))

PRESETS: dict[str, Preset] = {
    "vit-micro-32": Preset(
        "vit_tiny_patch16_224", 32, "ViT for tests: 32 px, patch 8, depth 3, width 48, 3 heads, CLS token",
        dict(patch_size=8, depth=3, embed_dim=48, num_heads=3),
    ),
    "simmim-vit-micro-32": Preset(
        "beit_base_patch16_224", 32,
        "the official SimMIM ViT layout for tests: BEiT-style, 32 px, patch 8, depth 3, width 48, 3 heads, shared "
        "relative position bias, layer scale 0.1",
        dict(patch_size=8, depth=3, embed_dim=48, num_heads=3, use_abs_pos_emb=False, use_rel_pos_bias=False,
             use_shared_rel_pos_bias=True, init_values=0.1, global_pool="token"),
    ),
    "vit-tiny-64": Preset(
        "vit_tiny_patch16_224", 64, "ViT for CPU runs: 64 px, patch 8, depth 6, width 192, 3 heads, CLS token",
        dict(patch_size=8, depth=6, embed_dim=192, num_heads=3),
    ),
    "swin-tiny-64": Preset(
        "swin_tiny_patch4_window7_224", 64,
        "Swin for CPU runs: 64 px, patch 4, window 4, depths 2-2-6, widths 48-96-192, heads 3-6-12", _SWIN_TINY,
    ),
    "swinv2-tiny-64": Preset(
        "swinv2_tiny_window8_256", 64,
        "SwinV2 for CPU runs: 64 px, patch 4, window 4, depths 2-2-6, widths 48-96-192, heads 3-6-12", _SWIN_TINY,
    ),
    "vit-base-224": Preset("vit_base_patch16_224", 224, "the paper's ViT-B/16 (supervised, MoCo v3, MAE)"),
    "simmim-vit-base-224": Preset(
        "beit_base_patch16_224", 224,
        "official SimMIM ViT-B pre-training model: BEiT-style, shared relative position bias, layer scale 0.1, "
        "no absolute position embedding, CLS token and final norm",
        dict(use_abs_pos_emb=False, use_rel_pos_bias=False, use_shared_rel_pos_bias=True, init_values=0.1,
             global_pool="token"),
    ),
    "swin-base-224": Preset("swin_base_patch4_window7_224", 224, "the paper's Swin-B (window 7)"),
    "swinv2-base-192": Preset("swinv2_base_window12_192", 192, "SimMIM SwinV2-B pre-training setting (window 12)"),
}


DEFAULT_PRESET = "vit-tiny-64"  # what pretrain and finetune build or start from when no model is named


def check_model_spelling(spec: str | os.PathLike, arch: str | None = None) -> None:
    """Refuse a MODEL that names nothing: not a preset, not ``timm:NAME``, not an existing file or directory;
    and ``arch`` given for anything but a checkpoint file (the checks :func:`mimlens.models.load_model` makes,
    minus timm's registry)."""
    spec = os.fspath(spec)
    path = Path(spec)
    if spec.startswith("timm:"):
        _check_timm_name(spec)
    if spec in PRESETS or spec.startswith("timm:") or path.is_dir():
        if arch is not None:
            what = f"run directory {path} names its model" if path.is_dir() else f"{spec!r} names the model itself"
            raise MimlensError(f"arch={arch!r} is only for checkpoint files; {what}")
        return
    if path.is_file():
        return
    if os.sep in spec or path.suffix:
        raise MimlensError(f"model {spec!r}: no such file or directory")
    close = difflib.get_close_matches(spec, list(PRESETS), n=3, cutoff=0.5)
    hint = f"close presets: {', '.join(close)}" if close else f"presets: {', '.join(PRESETS)}"
    if _timm_defines(spec):
        hint = f"did you mean timm:{spec}?"
    raise MimlensError(f"unknown model {spec!r}: expected a preset or timm:NAME ({hint})")


def _timm_sources() -> list[str]:
    """The text of timm's model files (empty when timm is not installed)."""
    found = importlib.util.find_spec("timm")
    if found is None or not found.submodule_search_locations:
        return []
    folder = Path(next(iter(found.submodule_search_locations))) / "models"
    return [file.read_text(errors="replace") for file in sorted(folder.glob("*.py"))]


def _timm_defines(name: str) -> bool:
    """Whether timm's model files define a model function ``name`` (read as text: a hint, not timm's registry)."""
    if not re.fullmatch(r"\w+", name):
        return False
    pattern = re.compile(rf"^def {name}\(", re.MULTILINE)
    return any(pattern.search(text) for text in _timm_sources())


def _check_timm_name(spec: str) -> None:
    """Refuse a ``timm:NAME[.TAG]`` whose NAME appears nowhere in timm's model files: timm registers a model by
    the name of its function, an old name as a string, so such a name cannot be registered. A name that does
    appear is left to timm's registry (:mod:`mimlens.models.build`)."""
    name = spec.removeprefix("timm:").split(".")[0]
    sources = _timm_sources()
    if not sources or not re.fullmatch(r"\w+", name) or any(re.search(rf"\b{name}\b", t) for t in sources):
        return
    defined = {m for text in sources for m in re.findall(r"^def ([a-z]\w*)\(", text, re.MULTILINE)}
    close = difflib.get_close_matches(name, sorted(defined), n=5, cutoff=0.6)
    hint = f"; close timm names: {', '.join(close)}" if close else ""
    raise MimlensError(f"unknown timm model {name!r} in {spec!r}{hint}")


ENCODERS = ("base", "momentum")  # MoCo v3's two encoders


def check_loading(pretrained: Any, encoder: Any, prefix: str = "") -> None:
    """``pretrained`` is a boolean and ``encoder`` one of :data:`ENCODERS` (keys named with ``prefix``)."""
    if not isinstance(pretrained, bool):
        raise MimlensError(f"{prefix}pretrained={pretrained!r}: expected true or false")
    if encoder not in ENCODERS:
        raise MimlensError(f"{prefix}encoder={encoder!r}: expected one of {', '.join(ENCODERS)}")


def model_slug(text: str) -> str:
    """A file-name-safe short form of a MODEL spelling (``timm:vit_small`` → ``vit_small``)."""
    name = Path(str(text).removeprefix("timm:").rstrip("/")).name or str(text)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def model_label(spec: str) -> str:
    """The name figures give a MODEL spelling: a preset or timm name as written (``timm:`` dropped), a run
    directory's folder name, and for a checkpoint inside a run (``RUN/checkpoints/last.pt``) the run's folder
    name, with the step of a snapshot (``RUN/checkpoints/step_500.safetensors`` → ``RUN-step_500``); any other
    file keeps its file name. File-name safe, as :func:`model_slug`."""
    path = Path(str(spec))
    if path.parent.name == "checkpoints" and path.parent.parent.name:
        step = path.stem if path.stem.startswith("step_") else ""
        return model_slug(path.parent.parent.name + (f"-{step}" if step else ""))
    return model_slug(spec)
