"""The fine-tuning loop: the engine's data order, lr rule, schedule and log, with layer-wise lr decay.

It differs from :func:`mimlens.engine.train` in one point that fine-tuning needs: the optimizer groups come
from the objective's ``param_groups(weight_decay, layer_decay)`` (timm groups with ``lr_scale``; the optimizer
lr stays the base lr and timm's scheduler multiplies by ``lr_scale`` once per update). It runs in one process
without checkpoints or resume (fine-tuning runs are short); bf16 autocast on CUDA, fp32 on CPU.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from mimlens.errors import MimlensError


def build_optimizer(objective: nn.Module, optim: dict[str, Any], lr: float) -> torch.optim.Optimizer:
    """AdamW over the objective's layer-decay groups; every group starts at the base ``lr`` (unscaled)."""
    groups = objective.param_groups(float(optim["weight_decay"]), float(optim["layer_decay"]))
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(optim["betas"]), eps=float(optim["eps"]))


def fit(objective: nn.Module, dataset: Dataset, transform, cfg: dict[str, Any], run_dir: str | Path) -> dict:
    """Train ``objective`` on ``transform(dataset[i])`` for ``train.steps`` (or ``train.epochs``) updates.

    Reads ``optim`` (base_lr, batch_size, weight_decay, layer_decay, betas, eps, warmup_steps, warmup_lr,
    min_lr, clip_grad), ``train`` (steps | epochs, seed, log_every) and ``run`` (device, num_workers, progress).
    Fills in ``optim.lr = base_lr × batch_size / 256``; the warm-up is capped at half the run. Writes
    ``log.jsonl`` and ``backbone.safetensors``.
    """
    from mimlens import distributed
    from mimlens.engine import build_loader, build_scheduler, scaled_lr, seed_everything
    from mimlens.engine.runlog import RunLog
    from mimlens.models.load import BACKBONE_FILE, save_backbone

    if distributed.is_launched():
        raise MimlensError("fine-tuning runs in one process; start it without torchrun (use --device cuda for a GPU)")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    optim, tr, run = cfg["optim"], cfg["train"], cfg["run"]
    seed = int(tr["seed"])
    seed_everything(seed)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if run["device"] == "auto"
                          else run["device"])
    batch_size = int(optim["batch_size"])
    loader, sampler = build_loader(dataset, transform, batch_size=batch_size, num_replicas=1, rank=0, seed=seed,
                                   num_workers=int(run["num_workers"]), pin_memory=device.type == "cuda")
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise MimlensError(f"the training set has {len(dataset)} samples, fewer than one batch ({batch_size}); "
                           "lower optim.batch_size or use more data")
    total = int(tr["steps"]) if tr.get("steps") is not None else int(tr["epochs"]) * steps_per_epoch
    optim["lr"] = scaled_lr(float(optim["base_lr"]), batch_size)
    objective = objective.to(device).train()
    optimizer = build_optimizer(objective, optim, optim["lr"])
    params = [p for group in optimizer.param_groups for p in group["params"]]
    warmup = min(int(optim["warmup_steps"]), total // 2)
    scheduler = build_scheduler(optimizer, total_steps=total, warmup_steps=warmup, min_lr=float(optim["min_lr"]),
                                warmup_lr=float(optim["warmup_lr"]))
    scheduler.step_update(0)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext())
    log_every = int(tr["log_every"])
    log = RunLog(run_dir, total_steps=total, initial_step=0, enabled=True, progress=bool(run["progress"]),
                 tensorboard=False)
    step, window, start, last = 0, [], time.perf_counter(), None
    try:
        while step < total:
            sampler.set_epoch(step // steps_per_epoch)
            for batch in loader:
                batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
                with autocast:
                    out = objective(batch)
                out["loss"].backward()
                clip = optim.get("clip_grad")
                grad_norm = (torch.nn.utils.clip_grad_norm_(params, float(clip)) if clip
                             else torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                scheduler.step_update(step)
                log.advance()
                window.append({k: float(v.detach()) for k, v in {**out, "grad_norm": grad_norm}.items()})
                if not math.isfinite(window[-1]["loss"]):
                    raise MimlensError(f"loss is {window[-1]['loss']} at fine-tuning step {step}; lower optim.base_lr "
                                       "or lengthen the warm-up")
                if step % log_every == 0 or step == total:
                    elapsed = time.perf_counter() - start
                    last = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
                    log.write({"step": step, "epoch": (step - 1) // steps_per_epoch,
                               "lr": max(g["lr"] for g in optimizer.param_groups), **last,
                               "images_per_s": len(window) * batch_size / max(elapsed, 1e-9)})
                    window, start = [], time.perf_counter()
                if step == total:
                    break
    finally:
        log.close()
    save_backbone(objective.encoder, run_dir / BACKBONE_FILE)
    return {"step": step, "total_steps": total, "warmup_steps": warmup, "loss": last["loss"] if last else None,
            "device": str(device)}
