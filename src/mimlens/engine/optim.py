"""AdamW with parameter groups, the batch-scaled learning rate, and warm-up + cosine via timm's scheduler.

Learning-rate rule (stated in every config): ``lr = base_lr × global_batch / 256``, where the global batch
is the number of images per optimizer update summed over processes and accumulation steps. MAE and MoCo v3
state their base lr per 256 images; SimMIM and DeiT state theirs per 512, which the shipped configs convert
(halve) to per 256.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler
from torch import nn

from mimlens.errors import MimlensError

REFERENCE_BATCH = 256


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """``base_lr × global_batch / 256``: the linear scaling rule of Goyal et al. with MAE's and MoCo v3's
    reference batch (SimMIM and DeiT use 512: their base lr is halved to per 256 in the configs)."""
    return base_lr * global_batch / REFERENCE_BATCH


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full names of parameters every (sub)module lists in its ``no_weight_decay()`` (timm's convention).

    A wrapper around a timm backbone gets the backbone's ``pos_embed``/``cls_token``/relative position
    tables under the wrapper's prefix, plus its own tokens (e.g. SimMIM's ``mask_token``).
    """
    names = set()
    for prefix, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if callable(listed):
            names.update(f"{prefix}.{n}" if prefix else n for n in listed())
    return names


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float, layer_decay: float | None = None,
                    betas=(0.9, 0.999), eps: float = 1e-8):
    """AdamW over the model's own ``param_groups(weight_decay, layer_decay)`` when it offers them (fine-tuning
    objectives: groups with ``lr_scale``, which timm's schedulers apply), else two groups: norms, biases (every
    1-D parameter) and ``no_weight_decay()`` names get no weight decay. Every group starts at ``lr``."""
    if hasattr(model, "param_groups"):
        groups = model.param_groups(weight_decay, 1.0 if layer_decay is None else layer_decay)
    else:
        groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_weight_decay_names(model))
    if not groups:
        raise MimlensError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def param_group_rows(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[dict]:
    """One row per optimised parameter: ``{"name", "lr_scale", "weight_decay"}`` (``RUN/param_groups.json``)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [{"name": names[id(p)], "lr_scale": float(group.get("lr_scale", 1.0)),
             "weight_decay": float(group["weight_decay"])}
            for group in optimizer.param_groups for p in group["params"]]


def build_scheduler(optimizer, *, total_steps: int, warmup_steps: int, min_lr: float = 0.0, warmup_lr: float = 0.0,
                    schedule: str = "cosine", decay_steps: Sequence[int] = (), decay_rate: float = 0.1):
    """Linear warm-up from ``warmup_lr`` over ``warmup_steps`` updates, then

    - ``cosine``: cosine decay to ``min_lr`` at ``total_steps`` (warm-up excluded from the cosine);
    - ``multistep``: the lr times ``decay_rate`` at each of ``decay_steps`` (update counts from the start,
      warm-up included, e.g. SimMIM's 800-epoch schedule: × 0.1 at epoch 700).

    Stepped per optimizer update (``step_update(step)``), so the schedule is independent of epoch length.
    """
    if warmup_steps >= total_steps:
        raise MimlensError(f"warm-up ({warmup_steps} steps) must be shorter than the run ({total_steps} steps)")
    if schedule == "cosine":
        return CosineLRScheduler(optimizer, t_initial=total_steps - warmup_steps, lr_min=min_lr, warmup_t=warmup_steps,
                                 warmup_lr_init=warmup_lr, warmup_prefix=True, t_in_epochs=False)
    if schedule == "multistep":
        return MultiStepLRScheduler(optimizer, decay_t=sorted(int(t) for t in decay_steps), decay_rate=decay_rate,
                                    warmup_t=warmup_steps, warmup_lr_init=warmup_lr, warmup_prefix=False,
                                    t_in_epochs=False)
    raise MimlensError(f"optim.schedule must be 'cosine' or 'multistep', got {schedule!r}")
