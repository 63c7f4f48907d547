"""The study file: which models, in which roles, are analysed, probed and fine-tuned on which data, and how the
stages are launched. Checked in full before anything runs: every problem is one line naming the file and the
key (an unknown key, a wrong type, a value out of range), all of them at once.

```yaml
models:                        # name -> where the weights come from, and the model's role in the findings
  simmim: {source: simmim_pretrain.pth, arch: simmim-vit-base-224, role: mim}
  deit:   {source: "timm:deit_base_patch16_224.fb_in1k", pretrained: true, role: supervised}
  moco:   {source: vit-b-300ep.pth.tar, arch: vit-base-224, role: contrastive}
  random: {source: vit-base-224, seed: 0, role: random}
  mine:   {pretrain: {objective: simmim, recipe: simmim_vit-tiny_synthetic64}, role: mim}
analysis: {data: ~/imagenet/val, num_images: 5000, batch_size: 64}
probes:   {tasks: [cls, depth], data: "synthetic:1024", num_eval: 256}
finetune:
  depth: {data: ~/nyu, recipe: depth.yaml, overrides: {train: {steps: 2000}}, drop_last: [0, 1, 2]}
masks:    {img_size: 224, num_masks: 200}   # the AvgDist sweep of SimMIM's masking settings
bars:     {images: 256}                      # validation images of the pre-trainings' training bars
launch:   {processes: 2, device: cpu, parallel: 1}
# launch: {scheduler: pool, parallel: 2}   # one-process stages in 2 worker processes that import torch once
budget:   {pretrain_simmim: 26, finetune_depth: 3.6}  # expected minutes per stage kind: the time left is printed
# on a Slurm cluster: every command stage a job (see mimlens.study.slurm)
# launch: {scheduler: slurm, slurm: {partition: gpu, time: 240, gpus_per_task: 8, cpus_per_task: 32}}
```

``overrides`` in ``analysis`` and ``probes`` are merged into the config those stages run with (e.g. the synthetic
scenes' difficulty: ``{data: {synthetic: {num_objects: [1, 2]}}}``); ``kwargs`` of a model are ``build_model``
keywords of a random initialisation (e.g. ``{pos_embed: sincos}``).

``launch.processes`` is every stage's number of ``torchrun`` processes; ``processes`` in ``analysis``, ``probes``
or a task of ``finetune`` overrides it for those stages (e.g. fine-tune on 8 GPUs, analyse on 1).

A model is exactly one of ``source`` (a MODEL spelling as every command reads it: a checkpoint file with its
``arch``, ``timm:NAME.TAG`` with ``pretrained``, a preset or ``timm:NAME`` for a seeded random initialisation, a
mimlens run folder) or ``pretrain`` (a pre-training the study runs: a registered objective and a recipe, a
shipped recipe's name from ``configs/`` or a YAML path, with ``overrides``). ``drop_last`` lists the numbers of
last blocks to drop in the supervised models' fine-tunings (the F4 sweep). Relative paths are relative to the
study file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimlens.errors import MimlensError

ROLES = ("mim", "supervised", "contrastive", "random", "other")
PREFIX_POLICIES = ("renorm", "drop", "keep")
CKA_UNITS = ("image", "pooled", "token")
ENCODERS = ("base", "momentum")
SCHEDULERS = ("local", "pool", "slurm")


@dataclass(frozen=True)
class ModelSpec:
    """One model of a study: ``source`` (a MODEL spelling) or ``pretrain`` (objective, recipe, overrides)."""

    name: str
    role: str
    source: str | None = None
    arch: str | None = None
    pretrained: bool = False
    encoder: str = "base"
    seed: int = 0
    pretrain: dict[str, Any] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)  # build_model keywords of a random initialisation
    label: str | None = None  # the model's name in figures (default: its name)

    @property
    def shown(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class FinetuneSpec:
    """One downstream task's fine-tunings: its data, recipe (a YAML path or None for the task's own) with
    overrides, and the numbers of last blocks the supervised models drop (``(0,)``: no sweep)."""

    task: str
    data: str
    recipe: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    drop_last: tuple[int, ...] = (0,)
    processes: int | None = None


@dataclass(frozen=True)
class Study:
    """A checked study file (see the module docstring); ``path`` is where it was read from."""

    path: Path
    models: tuple[ModelSpec, ...]
    analysis: dict[str, Any] | None
    probes: dict[str, Any] | None
    finetune: tuple[FinetuneSpec, ...]
    launch: dict[str, Any]
    claims_findings: bool = True
    masks: dict[str, Any] | None = None
    bars: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, float] = field(default_factory=dict)  # stage kind -> expected minutes
    about: dict[str, Any] = field(default_factory=dict)  # more lines of the report's "about" list

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)


class _Errors:
    """Problems found so far, each ``KEY: what is wrong``; raised together as one line each."""

    def __init__(self, path: Path):
        self.path, self.lines = path, []

    def add(self, key: str, message: str) -> None:
        self.lines.append(f"{self.path}: {key}: {message}")

    def raise_if_any(self) -> None:
        if self.lines:
            raise MimlensError("\n".join(self.lines))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int>=0": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "int>=1": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "mapping": (lambda v: isinstance(v, dict), "a mapping"),
    "role": (lambda v: v in ROLES, f"one of {', '.join(ROLES)}"),
    "encoder": (lambda v: v in ENCODERS, f"one of {', '.join(ENCODERS)}"),
    "prefix_policy": (lambda v: v in PREFIX_POLICIES, f"one of {', '.join(PREFIX_POLICIES)}"),
    "cka_unit": (lambda v: v in CKA_UNITS, f"one of {', '.join(CKA_UNITS)}"),
    "names": (lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v),
              "a non-empty list of analysis names"),
    "tasks": (lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v),
              "a non-empty list of task names"),
    "ints": (lambda v: isinstance(v, list) and bool(v) and all(_is_int(x) and x >= 0 for x in v),
             "a non-empty list of integers >= 0"),
    "scheduler": (lambda v: v in SCHEDULERS, f"one of {', '.join(SCHEDULERS)}"),
    "sbatch": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and k and isinstance(x, (str, int))
                                                     for k, x in v.items()),
               "a mapping of sbatch option names (without --) to values (strings, numbers, true)"),
}

SECTIONS: dict[str, dict[str, str]] = {
    "model": {"source": "str", "arch": "str", "pretrained": "bool", "encoder": "encoder", "seed": "int>=0",
              "kwargs": "mapping", "pretrain": "mapping", "role": "role", "label": "str"},
    "pretrain": {"objective": "str", "recipe": "str", "overrides": "mapping"},
    "analysis": {"data": "str", "num_images": "int>=1", "batch_size": "int>=1", "prefix_policy": "prefix_policy",
                 "cka_unit": "cka_unit", "cka_bootstrap": "int>=0", "cka_permutations": "int>=0", "names": "names",
                 "split": "str", "processes": "int>=1", "overrides": "mapping"},
    "probes": {"tasks": "tasks", "data": "str", "num_train": "int>=1", "num_eval": "int>=1", "batch_size": "int>=1",
               "seed": "int>=0", "processes": "int>=1", "overrides": "mapping"},
    "masks": {"img_size": "int>=1", "num_masks": "int>=1"},
    "bars": {"images": "int>=1"},
    "finetune": {"data": "str", "recipe": "str", "overrides": "mapping", "drop_last": "ints", "processes": "int>=1"},
    "launch": {"processes": "int>=1", "device": "str", "parallel": "int>=1", "threads": "int>=1",
               "scheduler": "scheduler", "slurm": "mapping"},
    "slurm": {"partition": "str", "time": "int>=1", "nodes": "int>=1", "gpus_per_task": "int>=0",
              "cpus_per_task": "int>=1", "account": "str", "qos": "str", "signal_seconds": "int>=1",
              "requeues": "int>=0", "sbatch": "sbatch"},
}
TOP = {"models", "analysis", "probes", "finetune", "masks", "bars", "launch", "claims_findings", "budget", "about"}
LAUNCH_DEFAULTS = {"processes": 1, "device": "cpu", "parallel": 1, "threads": None, "scheduler": "local"}
# launch.slurm: time limit (minutes), nodes of a multi-process stage, the USR1 warning (seconds before the limit),
# requeues after a time limit; partition, account and qos are the cluster's defaults when not given
SLURM_DEFAULTS = {"time": 60, "nodes": 1, "gpus_per_task": 0, "cpus_per_task": 1, "signal_seconds": 120,
                  "requeues": 3, "sbatch": {}}


def _section(errors: _Errors, where: str, value: Any, schema: str, required: tuple[str, ...] = ()) -> dict | None:
    """``value`` checked against ``SECTIONS[schema]``: unknown keys, wrong types and missing required keys are
    added to ``errors``; returns the mapping (None when it is not one)."""
    if not isinstance(value, dict):
        errors.add(where, f"expected a mapping, got {type(value).__name__}")
        return None
    fields = SECTIONS[schema]
    for key, item in value.items():
        if key not in fields:
            errors.add(f"{where}.{key}", f"unknown key (expected one of {', '.join(fields)})")
            continue
        ok, expected = CHECKS[fields[key]]
        if not ok(item):
            errors.add(f"{where}.{key}", f"{item!r}: expected {expected}")
    for key in required:
        if key not in value:
            errors.add(f"{where}.{key}", "missing")
    return value


def _resolve_path(text: str, base: Path) -> str:
    """A path relative to the study file made absolute; data specs (``synthetic[:N]``, ``photos[:N]``) and MODEL
    spellings that are not paths (``timm:``, presets) are kept as written."""
    if ":" in text.split("/")[0] or not text:
        return text
    path = Path(text).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = base / path
    return str(candidate) if candidate.exists() or "/" in text or text.endswith((".pt", ".pth", ".tar", ".bin",
                                                                                  ".safetensors", ".yaml")) else text


def _model(errors: _Errors, name: str, value: Any, base: Path) -> ModelSpec | None:
    from mimlens.pretrain.registry import OBJECTIVES

    where = f"models.{name}"
    section = _section(errors, where, value, "model", required=("role",))
    if section is None:
        return None
    if ("source" in section) == ("pretrain" in section):
        errors.add(where, "give exactly one of source (weights to load) or pretrain (a pre-training to run)")
    if section.get("pretrained") and not str(section.get("source", "")).startswith("timm:"):
        errors.add(f"{where}.pretrained", "timm's pretrained weights need a source timm:NAME.TAG")
    pretrain = section.get("pretrain")
    if isinstance(pretrain, dict) and _section(errors, f"{where}.pretrain", pretrain, "pretrain",
                                               required=("objective",)) is not None:
        if pretrain.get("objective") not in OBJECTIVES:
            errors.add(f"{where}.pretrain.objective", f"{pretrain.get('objective')!r}: expected one of "
                                                       f"{', '.join(OBJECTIVES)}")
        pretrain = {**pretrain, "recipe": _recipe(errors, f"{where}.pretrain.recipe", pretrain.get("recipe"), base)}
    source = section.get("source")
    return ModelSpec(name, section.get("role", "other"), _resolve_path(source, base) if isinstance(source, str)
                     else None, section.get("arch"), bool(section.get("pretrained", False)),
                     section.get("encoder", "base"), section.get("seed", 0), pretrain,
                     dict(section["kwargs"]) if isinstance(section.get("kwargs"), dict) else {}, section.get("label"))


def _recipe(errors: _Errors, key: str, recipe: Any, base: Path) -> str | None:
    """A recipe YAML: a path (relative to the study file) or the name of a shipped one in ``configs/``."""
    if recipe is None:
        return None
    if not isinstance(recipe, str):
        return None  # the type error is already recorded
    for candidate in (base / recipe, Path(recipe).expanduser(), shipped_recipe(recipe)):
        if candidate is not None and candidate.is_file():
            return str(candidate.resolve())
    errors.add(key, f"{recipe!r}: no such YAML file, nor a shipped recipe (configs/<name>.yaml)")
    return None


def shipped_recipe(name: str) -> Path | None:
    """``configs/<name>.yaml`` of the source tree, when it has one."""
    root = Path(__file__).resolve().parents[3] / "configs"
    path = root / (name if name.endswith(".yaml") else f"{name}.yaml")
    return path if path.is_file() else None


def _finetune(errors: _Errors, section: Any, base: Path) -> tuple[FinetuneSpec, ...]:
    from mimlens.tasks.registry import TASKS

    if section is None:
        return ()
    if not isinstance(section, dict):
        errors.add("finetune", f"expected a mapping of task -> settings, got {type(section).__name__}")
        return ()
    specs = []
    for task, value in section.items():
        if task not in TASKS:
            errors.add(f"finetune.{task}", f"unknown task (expected one of {', '.join(TASKS)})")
            continue
        settings = _section(errors, f"finetune.{task}", value, "finetune", required=("data",))
        if settings is None:
            continue
        recipe = _recipe(errors, f"finetune.{task}.recipe", settings.get("recipe"), base)
        specs.append(FinetuneSpec(task, _resolve_path(str(settings.get("data", "")), base), recipe,
                                  dict(settings.get("overrides") or {}), tuple(settings.get("drop_last", [0])),
                                  settings.get("processes")))
    return tuple(specs)


def _check_names(errors: _Errors, analysis: dict | None, probes: dict | None) -> None:
    from mimlens.analysis.registry import ANALYSES
    from mimlens.tasks.registry import TASKS

    for name in (analysis or {}).get("names", []) if isinstance((analysis or {}).get("names"), list) else []:
        if name not in ANALYSES:
            errors.add("analysis.names", f"unknown analysis {name!r} (expected names from {', '.join(ANALYSES)})")
    probed = [t for t, entry in TASKS.items() if entry.probe is not None]
    for task in (probes or {}).get("tasks", []) if isinstance((probes or {}).get("tasks"), list) else []:
        if task not in probed:
            errors.add("probes.tasks", f"{task!r} has no frozen probe (expected names from {', '.join(probed)})")


SHIPPED = Path(__file__).resolve().parents[1] / "studies"  # the studies mimlens ships, by name


def study_file(name: str | Path) -> Path:
    """``name`` when it is a file, else the shipped study of that name (``SHIPPED/<name>.yaml``); an error
    naming both and the shipped studies otherwise."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = SHIPPED / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.yaml")))
    raise MimlensError(f"{name}: no such study file, and no shipped study of that name (shipped: {names})")


def load_study(path: str | Path) -> Study:
    """The study file ``path``, checked in full (every problem one line naming the key; all raised together)."""
    import re

    from mimlens.config import load_yaml

    path = Path(path)
    raw, errors, base = load_yaml(path), _Errors(path), path.resolve().parent
    for key in raw:
        if key not in TOP:
            errors.add(key, f"unknown key (expected one of {', '.join(sorted(TOP))})")
    models = []
    if not isinstance(raw.get("models"), dict) or not raw.get("models"):
        errors.add("models", "missing: expected a mapping of model name -> {source or pretrain, role}")
    else:
        for name, value in raw["models"].items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
                errors.add(f"models.{name}", "a model name is a folder name: letters, digits, '_', '.', '-'")
            model = _model(errors, str(name), value, base)
            if model is not None:
                models.append(model)
    analysis = _optional(errors, raw, "analysis", base)
    probes = _optional(errors, raw, "probes", base)
    _check_names(errors, analysis, probes)
    launch = _launch(errors, raw.get("launch", {}))
    if "claims_findings" in raw and not isinstance(raw["claims_findings"], bool):
        errors.add("claims_findings", f"{raw['claims_findings']!r}: expected true or false")
    finetune = _finetune(errors, raw.get("finetune"), base)
    masks = _optional(errors, raw, "masks", base)
    bars = _section(errors, "bars", raw.get("bars", {}), "bars") or {}
    budget = _budget(errors, raw.get("budget", {}))
    about = raw.get("about", {})
    if not isinstance(about, dict) or not all(isinstance(v, str | int | float) for v in about.values()):
        errors.add("about", f"{about!r}: expected a mapping of label -> text or number")
    errors.raise_if_any()
    return Study(path, tuple(models), analysis, probes, finetune, launch, bool(raw.get("claims_findings", True)),
                 masks, bars, budget, dict(about))


def _budget(errors: _Errors, value: Any) -> dict[str, float]:
    """``budget``: stage kind (``pretrain_simmim``, ``analyze``, ``finetune_depth``, ...) -> expected minutes."""
    if not isinstance(value, dict):
        errors.add("budget", f"{value!r}: expected a mapping of stage kind -> expected minutes")
        return {}
    for kind, minutes in value.items():
        if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes < 0:
            errors.add(f"budget.{kind}", f"{minutes!r}: expected minutes, a number >= 0")
    return {str(k): float(v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _launch(errors: _Errors, value: Any) -> dict[str, Any]:
    """The launch section with its defaults; with ``scheduler: slurm`` its ``slurm`` mapping, checked, with its
    defaults (``slurm`` without that scheduler is an error: it would be silently ignored)."""
    launch = {**LAUNCH_DEFAULTS, **(_section(errors, "launch", value, "launch") or {})}
    slurm = launch.get("slurm")
    if slurm is not None and launch["scheduler"] != "slurm":
        errors.add("launch.slurm", "given, but launch.scheduler is not slurm")
    if launch["scheduler"] == "slurm":
        checked = _section(errors, "launch.slurm", slurm, "slurm") if isinstance(slurm, dict) else {}
        launch["slurm"] = {**SLURM_DEFAULTS, **(checked or {})}
    return launch


def _optional(errors: _Errors, raw: dict, key: str, base: Path) -> dict | None:
    """An optional section, checked, with its ``data`` path resolved; None when absent."""
    if raw.get(key) is None:
        return None
    section = _section(errors, key, raw[key], key)
    if section is None:
        return None
    return {**section, "data": _resolve_path(section["data"], base)} if isinstance(section.get("data"), str) \
        else dict(section)
