"""The one training loop used by pre-training and fine-tuning: devices, AMP, DDP, checkpoint/resume, logging."""

from mimlens.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from mimlens.engine.loader import EpochSampler, SeededTransform, build_loader
from mimlens.engine.loop import NonFiniteLoss, train
from mimlens.engine.optim import build_optimizer, build_scheduler, no_weight_decay_names, scaled_lr

__all__ = [
    "EpochSampler",
    "NonFiniteLoss",
    "SeededTransform",
    "build_loader",
    "build_optimizer",
    "build_scheduler",
    "load_checkpoint",
    "no_weight_decay_names",
    "rng_state",
    "save_checkpoint",
    "scaled_lr",
    "seed_everything",
    "set_rng_state",
    "train",
]
