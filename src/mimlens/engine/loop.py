"""The one training loop: pre-training objectives and fine-tuning heads run through :func:`train`.

Conventions:

- an *objective* is an ``nn.Module`` whose ``forward(batch)`` returns a dict of scalar tensors with a
  ``"loss"`` key (the others, e.g. accuracy, are logged); it holds the timm backbone as ``encoder`` (exported
  without classifier as ``RUN/backbone.safetensors``) and may define ``on_step(step, total_steps)``, called
  before each update (e.g. for a momentum schedule);
- a *step* is one optimizer update of ``optim.batch_size`` images (the global batch: summed over processes
  and ``optim.accum_steps`` gradient-accumulation micro-batches);
- precision: fp32 on CPU, bf16 autocast on CUDA (``train.amp: auto``); a GradScaler only for ``fp16``;
- processes: ``torchrun`` starts one per device (:func:`mimlens.distributed.init`: gloo on CPU, NCCL on
  GPU); the model is wrapped in DDP and BatchNorm normalises over all processes' samples (SyncBatchNorm on
  CUDA, :class:`~mimlens.engine.sync_bn.ProcessBatchNorm` on CPU), so N processes train the model one process
  trains on the same global batch;
- optimizer: AdamW over the objective's ``param_groups(weight_decay, layer_decay)`` when it has them
  (fine-tuning: layer-wise lr decay through ``lr_scale``), else weight decay on all but 1-D parameters and
  ``no_weight_decay()`` names;
- resume: ``run.resume`` or ``RUN/checkpoints/last.pt`` restores everything needed to continue exactly as
  an uninterrupted run on CPU (data order mid-epoch, augmentation, dropout and mixing RNG). The config of
  the checkpoint must equal the current one outside the ``run`` section;
- stop signals (:data:`mimlens.signals.STOP_SIGNALS`: SIGINT, SIGTERM, SIGUSR1): the current step
  finishes, every process agrees to stop after the same step (an all-reduce of the flag each step), a checkpoint
  is written at that step and :class:`~mimlens.errors.Interrupted` is raised (exit status 128 + the signal); a
  rerun resumes from it exactly.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from mimlens import distributed
from mimlens.config import save_config
from mimlens.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from mimlens.engine.loader import build_loader
from mimlens.engine.optim import build_optimizer, build_scheduler, param_group_rows
from mimlens.engine.runlog import RunLog
from mimlens.engine.settings import Plan, Settings
from mimlens.engine.sync_bn import convert_process_batchnorm
from mimlens.errors import Interrupted, MimlensError
from mimlens.io import save_json
from mimlens.models.load import BACKBONE_FILE
from mimlens.models.snapshots import save_backbone, save_snapshot
from mimlens.signals import StopSignals, signal_name, stop_status


class NonFiniteLoss(MimlensError):
    """The loss became NaN or infinite; the run stopped without overwriting the last good checkpoint."""


def train(objective: nn.Module, dataset: Dataset, transform, cfg: dict[str, Any], run_dir: str | Path) -> dict:
    """Train ``objective`` on ``transform(dataset[i])`` samples as ``cfg`` says; return a summary dict.

    ``cfg`` holds the engine sections ``optim``, ``train`` and ``run`` (:mod:`mimlens.engine.settings`: every
    key, its default and meaning) next to the job's own sections. ``cfg`` is not modified: the run's
    ``config.yaml`` is ``cfg`` with ``optim.lr`` (the batch-scaled rate) and a ``resolved`` section (total,
    warm-up and decay steps, batch split) filled in. ``RUN/param_groups.json`` lists every optimised parameter
    with its ``lr_scale`` and ``weight_decay``.
    """
    return Trainer(objective, dataset, transform, cfg, Path(run_dir)).fit()


class Trainer:
    def __init__(self, objective: nn.Module, dataset: Dataset, transform, cfg: dict[str, Any], run_dir: Path):
        self.settings = settings = Settings.from_config(cfg)
        optim, tr, run = settings.optim, settings.train, settings.run
        self.run_dir = run_dir
        self.device = distributed.init(None if run.device == "auto" else run.device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        seed_everything(tr.seed + self.rank)

        self.accum = optim.accum_steps
        if optim.batch_size % (self.world * self.accum):
            raise MimlensError(f"optim.batch_size {optim.batch_size} must be divisible by processes ({self.world}) × "
                               f"optim.accum_steps ({self.accum})")
        self.global_batch = optim.batch_size
        self.micro_batch = optim.batch_size // (self.world * self.accum)

        self.amp_dtype, use_scaler = _precision(tr.amp, self.device)
        if self.world > 1:
            objective = (nn.SyncBatchNorm.convert_sync_batchnorm(objective) if self.device.type == "cuda"
                         else convert_process_batchnorm(objective))
        self.objective = objective.to(self.device).train()
        self.model = (DistributedDataParallel(self.objective, device_ids=[self.device.index] if self.device.type
                                              == "cuda" else None) if self.world > 1 else self.objective)
        self.params = [p for p in self.objective.parameters() if p.requires_grad]

        self.loader, self.sampler = build_loader(
            dataset, transform, batch_size=self.micro_batch, num_replicas=self.world, rank=self.rank, seed=tr.seed,
            num_workers=run.num_workers, pin_memory=self.device.type == "cuda")
        steps_per_epoch = self.sampler.num_samples // self.micro_batch // self.accum
        if steps_per_epoch == 0:
            raise MimlensError(f"the data set has {len(dataset)} samples, fewer than one global batch "
                               f"({optim.batch_size}); lower optim.batch_size or use more data")
        self.plan = plan = settings.plan(steps_per_epoch, self.world)
        self.steps_per_epoch, self.total_steps = steps_per_epoch, plan.total_steps
        self.cfg = _resolved_config(cfg, plan)

        self._build_optimizer(settings, plan)
        self.scaler = torch.amp.GradScaler(self.device.type) if use_scaler else None
        self.clip = optim.clip_grad

        self.step = 0
        self.saved_step: int | None = None
        self.last_loss: float | None = None
        self.lr: float | None = None
        self.epoch_sums: dict[str, float] = {}
        self.epoch_count = 0
        self.ckpt_path = run_dir / "checkpoints" / "last.pt"
        resume = run.resume or (self.ckpt_path if self.ckpt_path.is_file() else None)
        if resume is not None:
            self._restore(Path(resume))
        self.scheduler.step_update(self.step)
        if self.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, run_dir)
            save_json(param_group_rows(self.objective, self.optimizer), run_dir / "param_groups.json")

    def _build_optimizer(self, settings: Settings, plan) -> None:
        """AdamW over the objective's parameter groups (layer decay as ``lr_scale``) and its lr schedule."""
        optim, sched = settings.optim, settings.schedule
        self.optimizer = build_optimizer(self.objective, lr=plan.lr, weight_decay=optim.weight_decay,
                                         layer_decay=optim.layer_decay, betas=optim.betas, eps=optim.eps)
        self.scheduler = build_scheduler(
            self.optimizer, total_steps=plan.total_steps, warmup_steps=plan.warmup_steps, min_lr=sched.min_lr,
            warmup_lr=sched.warmup_lr, schedule=sched.schedule, decay_steps=plan.decay_steps,
            decay_rate=sched.decay_rate)

    def _describe(self) -> str:
        optim, plan = self.settings.optim, self.plan
        precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[self.amp_dtype]
        text = (f"training {self.total_steps} steps ({self.steps_per_epoch} per epoch) of {self.global_batch} images "
                f"= {self.world} process(es) × {self.accum} accumulation × {self.micro_batch}; lr {plan.lr:.3g} "
                f"(base_lr {optim.base_lr:g} × {self.global_batch} / 256); {self.device}, {precision}")
        if self.step:
            text += f"; resuming at step {self.step}"
        return text

    # --------------------------------------------------------------------------------------------------- loop
    def fit(self) -> dict:
        run = self.settings.run
        self.log = RunLog(self.run_dir, total_steps=self.total_steps, initial_step=self.step, enabled=self.is_main,
                          progress=run.progress, tensorboard=run.tensorboard)
        self.window: list[dict[str, torch.Tensor]] = []
        self.window_start = time.perf_counter()
        on_step = getattr(self.objective, "on_step", None)
        if self.is_main:
            print(self._describe(), flush=True)
        try:
            with StopSignals() as signals:
                self._steps(signals, on_step)
            if self.step == self.total_steps and self.is_main:
                self._export()
        finally:
            self.log.close()
        return {"run_dir": str(self.run_dir), "step": self.step, "total_steps": self.total_steps,
                "finished": self.step == self.total_steps, "loss": self.last_loss, "plan": self.plan.as_dict()}

    def _steps(self, signals: StopSignals, on_step) -> None:
        """Updates until the end, ``run.stop_at`` or a stop signal (then :class:`Interrupted`, after a checkpoint)."""
        tr, run = self.settings.train, self.settings.run
        log_every, ckpt_every, snapshot_every, stop_at = tr.log_every, tr.checkpoint_every, tr.snapshot_every, \
            run.stop_at
        while self.step < self.total_steps:
            epoch, done = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch, start=done * self.accum * self.micro_batch)
            batches = iter(self.loader)
            for _ in range(done, self.steps_per_epoch):
                if on_step is not None:
                    on_step(self.step, self.total_steps)
                self.window.append(self._update(batches))
                self.lr = max(g["lr"] for g in self.optimizer.param_groups)  # this update's (unscaled) lr
                self.step += 1
                self.scheduler.step_update(self.step)
                self.log.advance()
                signalled = self._agreed_signal(signals)
                end_of_epoch = self.step % self.steps_per_epoch == 0
                stop = self.step == self.total_steps or self.step == stop_at or signalled is not None
                checkpoint = stop or (ckpt_every and self.step % ckpt_every == 0)
                if end_of_epoch or checkpoint or self.step % log_every == 0:
                    self._flush(epoch)
                if end_of_epoch:
                    self._end_epoch(epoch)
                if checkpoint:
                    self._save()
                if snapshot_every and self.step % snapshot_every == 0 and self.is_main:
                    save_snapshot(self.objective.encoder, self.run_dir, self.step)
                if signalled is not None:
                    raise Interrupted(f"stopped by {signal_name(signalled)} after step {self.step}/"
                                      f"{self.total_steps}; checkpoint {self.ckpt_path} written, rerun the same "
                                      f"command to resume", stop_status(signalled))
                if stop:
                    break
            if self.step == stop_at:
                break

    def _agreed_signal(self, signals: StopSignals) -> int | None:
        """The stop signal any process has received (the same answer in every process), else None."""
        received = signals.received or 0
        if self.world > 1:
            flag = torch.tensor([received], device=distributed.collective_device())
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            received = int(flag.item())
        return received or None

    def _update(self, batches) -> dict[str, torch.Tensor]:
        """One update over ``accum_steps`` micro-batches: the objective's outputs (mean) and the gradient norm."""
        sums: dict[str, torch.Tensor] = {}
        for i in range(self.accum):
            batch = _to_device(next(batches), self.device)
            sync = contextlib.nullcontext() if (self.world == 1 or i == self.accum - 1) else self.model.no_sync()
            with sync:
                with self._autocast():
                    out = self.model(batch)
                loss = out["loss"] / self.accum if self.accum > 1 else out["loss"]
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            for key, value in out.items():
                value = value.detach().float()
                sums[key] = sums[key] + value if key in sums else value
        if self.accum > 1:
            sums = {k: v / self.accum for k, v in sums.items()}
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.clip:
            sums["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.params, float(self.clip)).detach()
        else:
            sums["grad_norm"] = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return sums

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ---------------------------------------------------------------------------------------------- logging
    def _flush(self, epoch: int) -> None:
        """Average the window's per-step values over processes, stop on a non-finite loss, write one log line."""
        if not self.window:
            return
        keys = list(self.window[0])
        values = torch.stack([torch.stack([rec[k] for k in keys]) for rec in self.window])
        if self.world > 1:
            distributed.all_reduce_sum_(values).div_(self.world)
        rows = values.cpu().tolist()
        first_step = self.step - len(rows) + 1
        for i, row in enumerate(rows):
            if not math.isfinite(row[keys.index("loss")]):
                raise NonFiniteLoss(
                    f"loss is {row[keys.index('loss')]} at step {first_step + i} (epoch {epoch}); training stopped. "
                    f"The last good checkpoint is kept ({self._saved_text()}). Lower optim.base_lr, lengthen the "
                    f"warm-up or check the data, and start a new run (another --out)")
        elapsed = time.perf_counter() - self.window_start
        means = {k: sum(r[j] for r in rows) / len(rows) for j, k in enumerate(keys)}
        for j, k in enumerate(keys):
            self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + sum(r[j] for r in rows)
        self.epoch_count += len(rows)
        self.last_loss = means["loss"]
        self.log.write({"step": self.step, "epoch": epoch, "lr": self.lr, **means,
                        "images_per_s": len(rows) * self.global_batch / max(elapsed, 1e-9)})
        self.window = []
        self.window_start = time.perf_counter()

    def _end_epoch(self, epoch: int) -> None:
        means = {k: v / self.epoch_count for k, v in self.epoch_sums.items()}
        self.log.write({"epoch": epoch, "epoch_end": True, "step": self.step, **means})
        self.epoch_sums, self.epoch_count = {}, 0

    # ---------------------------------------------------------------------------------------- checkpoints
    def _save(self) -> None:
        rngs = [None] * self.world
        if self.world > 1:
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        if self.is_main:
            save_checkpoint({
                "model": self.objective.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "step": self.step,
                "epoch": self.step // self.steps_per_epoch,
                "data": {"steps_per_epoch": self.steps_per_epoch, "step_in_epoch": self.step % self.steps_per_epoch,
                         "seed": self.settings.train.seed},
                "epoch_log": {"sums": self.epoch_sums, "count": self.epoch_count},
                "rng": rngs,
                "world_size": self.world,
                "config": self.cfg,
            }, self.ckpt_path)
        self.saved_step = self.step
        distributed.barrier()

    def _restore(self, path: Path) -> None:
        state = load_checkpoint(path)
        saved, current = _training_kind(state["config"]), _training_kind(self.cfg)
        if saved != current:
            hint = "give it as --init to fine-tune from it" if saved == "pre-training" else "resume from this run's own"
            raise MimlensError(f"cannot resume from {path}: it is a {saved} checkpoint and this is a {current} run; "
                               f"{hint}")
        changed = _differences(_without_run(state["config"]), _without_run(self.cfg))
        if changed:
            raise MimlensError(f"cannot resume from {path}: its config differs in {', '.join(changed)}; use the "
                               f"same settings, or another --out to start a new run")
        self.objective.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = self.saved_step = int(state["step"])
        self.epoch_sums = dict(state["epoch_log"]["sums"])
        self.epoch_count = int(state["epoch_log"]["count"])
        if state["world_size"] == self.world:
            set_rng_state(state["rng"][self.rank])
        else:
            warnings.warn(f"checkpoint {path} was written by {state['world_size']} processes, this run has "
                          f"{self.world}: RNG streams are re-seeded, so dropout and mixing differ from an "
                          f"uninterrupted run (data order and augmentation do not)", stacklevel=2)
            seed_everything(self.settings.train.seed + self.rank + self.step)

    def _saved_text(self) -> str:
        if self.saved_step is None:
            return "none was written yet"
        return f"{self.ckpt_path}, step {self.saved_step}"

    def _export(self) -> None:
        """``backbone.safetensors``: the encoder in timm keys, no classifier (what ``load_model(RUN)`` reads)."""
        save_backbone(self.objective.encoder, self.run_dir / BACKBONE_FILE)


def _precision(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a GradScaler is needed)."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "off"
    return {"off": (None, False), "bf16": (torch.bfloat16, False), "fp16": (torch.float16, True)}[amp]


def _resolved_config(cfg: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """A copy of ``cfg`` with ``optim.lr`` and the ``resolved`` section (what ``config.yaml`` holds)."""
    out = copy.deepcopy(cfg)
    out["optim"]["lr"] = plan.lr
    out["resolved"] = plan.as_dict()
    return out


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _training_kind(cfg: dict[str, Any]) -> str:
    """``pre-training``, ``fine-tuning`` or ``other``: the kind of run the config describes (:mod:`mimlens.rundir`)."""
    from mimlens.rundir import config_kind

    return {"pretrain": "pre-training", "finetune": "fine-tuning"}.get(config_kind(cfg), "other")


def _without_run(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k != "run"}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        a, b = list(a), list(b)
    return [] if a == b else [prefix.rstrip(".")]
