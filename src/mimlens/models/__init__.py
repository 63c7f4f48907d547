"""Backbones: build from timm names or presets, load and convert checkpoints to timm keys, drop last blocks.

See ``docs/models.md`` for the MODEL spellings, the presets and the checkpoint formats.
"""

from mimlens.models.build import PRESETS, build_model, preprocessing
from mimlens.models.convert import detect_format
from mimlens.models.load import load_model, model_section
from mimlens.models.snapshots import save_backbone
from mimlens.models.truncate import drop_last_blocks
from mimlens.models.weights import fitting_presets, load_checkpoint, load_pretrained

__all__ = [
    "PRESETS",
    "build_model",
    "detect_format",
    "drop_last_blocks",
    "fitting_presets",
    "load_checkpoint",
    "load_model",
    "load_pretrained",
    "model_section",
    "preprocessing",
    "save_backbone",
]
