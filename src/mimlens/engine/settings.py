"""The training engine's configuration: typed, frozen sections with every default in one place.

A run's YAML keeps three engine sections — ``optim`` (optimizer and learning-rate schedule), ``train`` (what
changes the result) and ``run`` (what does not) — and :func:`engine_defaults` is the only place their defaults
live: pre-training and every fine-tuning task state their recipe as overrides of it. :class:`Settings` reads
the sections once, checks every key and type (errors name the key), and :meth:`Settings.plan` resolves
steps/epochs, warm-up and the batch-scaled learning rate into a :class:`Plan` — returned, never written back
into the config.

Learning-rate rule: ``lr = base_lr × global_batch / 256``, where the global batch is the number of images per
optimizer update summed over processes and accumulation steps. (SimMIM and DeiT state their recipes per 512
images; the shipped configs convert their rates to per 256.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mimlens.errors import MimlensError

DEFAULT_WARMUP_FRACTION = 0.05
AMP_MODES = ("auto", "off", "bf16", "fp16")
SCHEDULES = ("cosine", "multistep")


@dataclass(frozen=True)
class Optim:
    """AdamW and its parameter groups. ``layer_decay`` None: the objective's own rule (1 for pre-training)."""

    base_lr: float = 4e-3  # per 256 images
    batch_size: int = 32  # global: summed over processes and accumulation steps
    accum_steps: int = 1
    weight_decay: float = 0.05  # not applied to norms, biases, position embeddings and tokens
    layer_decay: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: float | None = 5.0  # max global gradient norm; None: no clipping


@dataclass(frozen=True)
class Schedule:
    """Linear warm-up from ``warmup_lr``, then cosine to ``min_lr`` or steps of ``decay_rate``.

    Lengths in steps or in epochs, not both; no warm-up length given means 5 % of the run. ``warmup_lr`` and
    ``min_lr`` are absolute (not batch-scaled)."""

    schedule: str = "cosine"
    warmup_steps: int | None = None
    warmup_epochs: float | None = None
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6
    decay_steps: tuple[int, ...] | None = None
    decay_epochs: tuple[float, ...] | None = None
    decay_rate: float = 0.1


@dataclass(frozen=True)
class Train:
    """What changes the result: length, seed, precision, how often to log and checkpoint."""

    steps: int | None = None
    epochs: int | None = None
    seed: int = 0
    amp: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    log_every: int = 10
    checkpoint_every: int | None = 500  # plus one at the end of the run
    snapshot_every: int | None = None  # backbone snapshots RUN/checkpoints/step_<N>.safetensors


@dataclass(frozen=True)
class Run:
    """What does not change the result: device, workers, progress display, resume and stop points."""

    out: str | None = None
    device: str = "auto"
    num_workers: int = 0
    progress: bool = True
    tensorboard: bool = True  # when the tensorboard package is installed
    resume: str | None = None
    stop_at: int | None = None


SECTIONS = {"optim": (Optim, Schedule), "train": (Train,), "run": (Run,)}


def engine_defaults() -> dict[str, dict[str, Any]]:
    """The engine sections with their defaults, as the plain dict a YAML recipe overrides."""
    out: dict[str, dict[str, Any]] = {}
    for section, classes in SECTIONS.items():
        out[section] = {}
        for cls in classes:
            for f in dataclasses.fields(cls):
                value = f.default
                out[section][f.name] = list(value) if isinstance(value, tuple) else value
    out["optim"]["lr"] = None  # filled in config.yaml by the engine: the batch-scaled rate this run used
    return out


@dataclass(frozen=True)
class Plan:
    """What the engine resolved from the settings and the data: written to ``config.yaml`` under ``resolved``."""

    total_steps: int
    steps_per_epoch: int
    warmup_steps: int
    decay_steps: tuple[int, ...]
    lr: float
    global_batch: int
    micro_batch: int
    processes: int

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "decay_steps": list(self.decay_steps)}


@dataclass(frozen=True)
class Settings:
    optim: Optim = field(default_factory=Optim)
    schedule: Schedule = field(default_factory=Schedule)
    train: Train = field(default_factory=Train)
    run: Run = field(default_factory=Run)

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Settings:
        """Read the engine sections of ``cfg`` (other top-level sections belong to the job and are ignored)."""
        for name in SECTIONS:
            if not isinstance(cfg.get(name), dict):
                raise MimlensError(f"config section {name!r} is missing or not a mapping")
        optim = dict(cfg["optim"])
        optim.pop("lr", None)
        schedule = {k: optim.pop(k) for k in list(optim) if k in _names(Schedule)}
        settings = cls(_read(Optim, optim, "optim"), _read(Schedule, schedule, "optim"),
                       _read(Train, cfg["train"], "train"), _read(Run, cfg["run"], "run"))
        settings._check()
        return settings

    def _check(self) -> None:
        o, s, t = self.optim, self.schedule, self.train
        _positive("optim.batch_size", o.batch_size)
        _positive("optim.accum_steps", o.accum_steps)
        _positive("optim.base_lr", o.base_lr)
        if o.layer_decay is not None and not 0 < o.layer_decay <= 1:
            raise MimlensError(f"optim.layer_decay must lie in (0, 1], got {o.layer_decay}")
        if (t.steps is None) == (t.epochs is None):
            raise MimlensError(f"set exactly one of train.steps and train.epochs (got steps={t.steps}, "
                               f"epochs={t.epochs})")
        _positive(*(("train.steps", t.steps) if t.steps is not None else ("train.epochs", t.epochs)))
        _positive("train.log_every", t.log_every)
        for key in ("checkpoint_every", "snapshot_every"):  # None or 0: never (besides the end of the run)
            if (getattr(t, key) or 0) < 0:
                raise MimlensError(f"train.{key} must be a step count >= 0 or null, got {getattr(t, key)}")
        if t.amp not in AMP_MODES:
            raise MimlensError(f"train.amp must be one of {', '.join(AMP_MODES)}, got {t.amp!r}")
        if s.schedule not in SCHEDULES:
            raise MimlensError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {s.schedule!r}")
        for name in ("warmup", "decay"):
            if getattr(s, f"{name}_steps") is not None and getattr(s, f"{name}_epochs") is not None:
                raise MimlensError(f"set optim.{name}_steps or optim.{name}_epochs, not both")

    def plan(self, steps_per_epoch: int, processes: int) -> Plan:
        """Resolve lengths and the learning rate for ``steps_per_epoch`` optimizer updates per epoch."""
        from mimlens.engine.optim import scaled_lr

        o, s, t = self.optim, self.schedule, self.train
        total = t.steps if t.steps is not None else t.epochs * steps_per_epoch
        if s.warmup_steps is None and s.warmup_epochs is None:
            warmup, key = round(DEFAULT_WARMUP_FRACTION * total), None
        elif s.warmup_steps is not None:
            warmup, key = s.warmup_steps, "optim.warmup_steps (--warmup-steps)"
        else:
            warmup, key = round(s.warmup_epochs * steps_per_epoch), "optim.warmup_epochs"
        if key and not 0 <= warmup < total:
            raise MimlensError(f"{key} gives a warm-up of {warmup} steps; it must be shorter than the run "
                               f"({total} steps): lower it or lengthen the run")
        if s.decay_steps is not None:
            decay = tuple(int(v) for v in s.decay_steps)
        else:
            decay = tuple(round(float(v) * steps_per_epoch) for v in s.decay_epochs or ())
        return Plan(total_steps=int(total), steps_per_epoch=steps_per_epoch, warmup_steps=int(warmup),
                    decay_steps=decay, lr=scaled_lr(o.base_lr, o.batch_size), global_batch=o.batch_size,
                    micro_batch=o.batch_size // (processes * o.accum_steps), processes=processes)


def _names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _read(cls, values: dict[str, Any], section: str):
    """``cls(**values)`` with unknown keys and wrong types named (``section.key``)."""
    known = _names(cls)
    unknown = sorted(set(values) - known - (_names(Schedule) if cls is Optim else set()))
    if unknown:
        raise MimlensError(f"config: unknown key {section}.{unknown[0]} (expected one of: "
                           f"{', '.join(sorted(known))})")
    return cls(**{f.name: _coerce(f"{section}.{f.name}", values[f.name], f.type)
                  for f in dataclasses.fields(cls) if f.name in values})


def _coerce(key: str, value: Any, kind: str) -> Any:
    """Convert a YAML or flag value to the field's annotated kind (``kind`` is the annotation's text)."""
    if value is None:
        if "None" not in kind:
            raise MimlensError(f"config: {key} must be set (a {_word(kind)}), got null")
        return None
    try:
        if kind.startswith("tuple"):
            if not isinstance(value, list | tuple):
                raise TypeError
            return tuple(int(v) if "int" in kind else float(v) for v in value)
        if kind.startswith("bool"):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind.startswith("int"):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise TypeError
            return int(float(value))
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise MimlensError(f"config: {key} must be a {_word(kind)}, got {value!r}") from None


def _word(kind: str) -> str:
    for prefix, word in (("tuple", "list of numbers"), ("bool", "boolean (true/false)"), ("int", "whole number"),
                         ("float", "number"), ("str", "string")):
        if kind.startswith(prefix):
            return word
    return kind


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise MimlensError(f"{key} must be positive, got {value}")
