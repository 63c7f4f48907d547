"""One fine-tuning run from a config: load the backbone, drop its last blocks, attach the task head, train on
the engine (:func:`mimlens.engine.train`: ``torchrun`` processes, checkpoints and exact resume, accumulation,
AMP), evaluate with the field's metric in every process, and write the run directory; or a sweep over the
number of dropped blocks.

The config is a plain nested dict: the engine's defaults (:mod:`mimlens.engine.settings`) ← :data:`COMMON`
and every task's section (:data:`mimlens.tasks.registry.TASKS`) ← the task's recipe ← ``--config`` YAML ←
command-line flags. ``optim.layer_decay`` left unset becomes 0.65 for ViT-family backbones and 0.9 for Swin.

Run directory: ``config.yaml`` (with the ``model`` section that ``load_model(RUN)`` rebuilds the fine-tuned
backbone from and the engine's ``resolved`` section), ``param_groups.json``, ``log.jsonl``,
``checkpoints/last.pt``, ``backbone.safetensors``, ``metrics.json`` (every number with the metric variant
that produced it; the primary metric's standard error and per-item values, the trivial baselines and whether
the run beats the best of them: :func:`evidence`), ``per_item.json`` (every metric per evaluation item, the
baselines' too) and, for a sweep, ``drop_<K>/`` runs, ``drop_sweep.json`` and ``figures/layer_drop.png``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from mimlens import distributed
from mimlens.config import merge, resolve, save_config
from mimlens.engine.settings import engine_defaults
from mimlens.errors import MimlensError
from mimlens.io import save_json
from mimlens.model_names import DEFAULT_PRESET
from mimlens.models.family import family_of
from mimlens.tasks.registry import TASKS, task

COMMON: dict[str, Any] = {
    "task": "cls",
    "init": DEFAULT_PRESET,  # MODEL: preset, timm:NAME, checkpoint file (with arch) or run directory
    "arch": None,
    "model": {"name": None, "kwargs": {}},  # kwargs: build_model overrides; name: filled in (the result's arch)
    "drop_last": 0,
    "sweep_drop": None,  # list of K: one run per K and drop_sweep.json
    "data": {
        "source": "synthetic:2048",  # synthetic[:N] (N training items; sequences for track) or a folder
        "num_eval": None,  # synthetic evaluation items: 256 images, or 16 sequences for track
        "eval_split": "val",  # "train" evaluates on the training items (a check that the run can fit them)
        "synthetic": {"num_objects": [1, 2], "background_strength": 0.5},  # 1–2 shapes on dimmer backgrounds
    },
}
FINETUNE_RECIPE = {"train": {"steps": 200}}  # what fine-tuning changes in the engine's defaults


def defaults(name: str) -> dict[str, Any]:
    """The full default config of task ``name`` (every task's section is present, so one YAML serves all)."""
    base = {**copy.deepcopy(COMMON), **{t.name: copy.deepcopy(t.section) for t in TASKS.values()},
            **engine_defaults()}
    base["task"] = name
    return merge(merge(base, FINETUNE_RECIPE), task(name).recipe)


def resolve_config(config_path: str | Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """Defaults of the task ← YAML ← flags (dotted keys; None = not given)."""
    from mimlens.config import load_yaml

    layer = load_yaml(config_path) if config_path is not None else {}
    name = flags.get("task") or layer.get("task") or COMMON["task"]
    cfg = resolve(defaults(task(name).name), config_path, flags)
    if cfg["drop_last"] and cfg["sweep_drop"]:
        raise MimlensError("give drop_last or sweep_drop, not both")
    return _default_labels(cfg)


def _default_labels(cfg: dict[str, Any]) -> dict[str, Any]:
    """Classification labels left unset follow the data: ``fine_label`` (shape × texture) for synthetic scenes,
    ``label`` (the folder's classes) for an image folder."""
    from mimlens.tasks.datasets import synthetic_count

    synthetic = synthetic_count(str(cfg["data"]["source"])) is not None
    for name in ("cls", "linear"):
        if cfg[name]["label"] is None:
            cfg[name]["label"] = "fine_label" if synthetic else "label"
    return cfg


def load_backbone(cfg: dict[str, Any]):
    """(encoder, info, model section) for ``cfg["init"]`` with ``drop_last`` blocks removed."""
    from mimlens.models import PRESETS, drop_last_blocks, load_model

    overrides = dict(cfg["model"]["kwargs"])
    if cfg["task"] == "cls" and cfg["cls"]["drop_path"]:
        overrides["drop_path_rate"] = float(cfg["cls"]["drop_path"])
    encoder, info = load_model(str(cfg["init"]), cfg["arch"], **overrides)
    drop_last_blocks(encoder, int(cfg["drop_last"]))
    if "run" in info:
        name, kwargs = info["run"]["name"], {**info["run"]["kwargs"], **cfg["model"]["kwargs"]}
    else:
        arch = cfg["arch"] or str(cfg["init"])
        name = arch if arch in PRESETS or arch.startswith("timm:") else f"timm:{arch}"
        kwargs = dict(cfg["model"]["kwargs"])
    return encoder, info, {"name": name, "kwargs": {**kwargs, **_depth_kwargs(encoder, int(cfg["drop_last"]))}}


def _depth_kwargs(encoder, dropped: int) -> dict[str, Any]:
    """timm keywords that rebuild a backbone with its last blocks dropped (empty when none were)."""
    return family_of(encoder).rebuild_kwargs(encoder) if dropped else {}


def default_layer_decay(encoder) -> float:
    """0.9 for Swin (SimMIM's Swin-B fine-tuning), 0.65 for the ViT family (BEiT/MAE ViT-B)."""
    return family_of(encoder).default_layer_decay


def finetune(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """One fine-tuning run (or a drop sweep when ``cfg["sweep_drop"]`` is set); returns ``metrics.json``.

    ``train.steps: 0`` evaluates the start point. A rerun of the same config resumes from
    ``RUN/checkpoints/last.pt``; a run stopped early (``run.stop_at``) returns ``{"stopped_at": step}``.
    """
    if cfg["sweep_drop"]:
        return sweep_drop(cfg, run_dir)
    from mimlens.engine import seed_everything, train
    from mimlens.models import preprocessing

    run_dir = Path(run_dir)
    device = distributed.init(None if cfg["run"]["device"] == "auto" else cfg["run"]["device"])
    seed_everything(int(cfg["train"]["seed"]))
    encoder, info, model_section = load_backbone(cfg)
    cfg = copy.deepcopy(cfg)
    cfg["model"] = model_section
    if cfg["optim"]["layer_decay"] is None:
        cfg["optim"]["layer_decay"] = default_layer_decay(encoder)
    setup = task(cfg["task"]).setup_function()(cfg, encoder, preprocessing(encoder), run_dir)
    start = time.perf_counter()
    if cfg["train"]["steps"] == 0:
        summary: dict[str, Any] = {"step": 0, "finished": True, "loss": None, "plan": {"warmup_steps": 0, "lr": None}}
        setup.objective.to(device)
        if distributed.is_main():
            save_config(cfg, run_dir)
    else:
        summary = train(setup.objective, setup.train_set, setup.transform, cfg, run_dir)
        if not summary["finished"]:
            return {"stopped_at": summary["step"], "total_steps": summary["total_steps"]}
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics, variant = setup.evaluate()
    variant["eval_split"] = cfg["data"]["eval_split"]
    spec = task(cfg["task"])
    result = {
        "task": cfg["task"],
        "init": str(cfg["init"]),
        "init_format": info.get("format"),
        "model": model_section["name"],
        "drop_last": int(cfg["drop_last"]),
        "primary": {"name": spec.primary, "value": metrics[spec.primary], "higher_is_better": spec.higher_is_better},
        "metrics": metrics,
        "variant": variant,
        "train": {"steps": summary["step"], "warmup_steps": summary["plan"]["warmup_steps"],
                  "final_loss": summary["loss"], "seconds": round(train_seconds, 2), "lr": summary["plan"]["lr"],
                  "layer_decay": cfg["optim"]["layer_decay"], "processes": distributed.world_size()},
        "eval_seconds": round(time.perf_counter() - start, 2),
    }
    if setup.evidence:
        result.update(evidence(setup.evidence, result["primary"]))
    if distributed.is_main():
        save_json(result, run_dir / "metrics.json")
        if setup.evidence:
            save_json(setup.evidence, run_dir / "per_item.json")
        setup.write_extras(run_dir)
    distributed.barrier()
    return result


def evidence(found: dict[str, Any], primary: dict[str, Any]) -> dict[str, Any]:
    """What ``metrics.json`` keeps of a task's per-item evidence (:attr:`TaskSetup.evidence`): the primary
    metric's SE and per-item values (``items``), each baseline's metrics, and ``trained`` with its test (only
    where the task has a baseline to beat)."""
    from mimlens.tasks.uncertainty import summary, trained_check

    name, higher = primary["name"], primary["higher_is_better"]
    kind = found.get("statistics", {}).get(name, "mean")
    values = found["per_item"][name]
    baselines = found.get("baselines") or {}
    se = summary(values, kind)
    kept = {"primary": {**primary, "se": se["se"], "n": se["n"]},
            "items": {"unit": found["unit"], "ids": found["ids"], "statistic": kind, "values": values},
            "baselines": {b: {**{m: v for m, v in doc["metrics"].items() if not isinstance(v, list)},
                              f"{name}_se": summary(doc["per_item"][name], kind)["se"],
                              "description": doc["description"]} for b, doc in baselines.items()}}
    if baselines:
        check = trained_check(values, {b: v["per_item"][name] for b, v in baselines.items()},
                              {b: v["metrics"][name] for b, v in baselines.items()}, higher, kind)
        kept.update(trained=check.pop("trained"), trained_test=check)
    return kept


def result_line(result: dict[str, Any]) -> str:
    """The fine-tuning's last line: the primary metric with its SE and evaluation items, the steps, and where
    the task has baselines the best of them and whether the run beats it (``trained``, see :func:`evidence`)."""
    primary = result["primary"]
    text = f"{primary['name']} {primary['value']:.4g}"
    if "se" in primary:
        text += f" ± {primary['se']:.2g} (SE, {primary['n']} {result['items']['unit']}s)"
    text += f" after {result['train']['steps']} steps"
    if "trained" in result:
        best = result["trained_test"]["baseline"]
        verdict = "trained" if result["trained"] else "not trained"
        text += f"; best trivial baseline ({best}) {result['baselines'][best][primary['name']]:.4g}: {verdict}"
    return text


def sweep_drop(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """One run per K in ``sweep_drop`` (``RUN/drop_<K>``), then ``drop_sweep.json`` and the figure."""
    run_dir = Path(run_dir)
    rows, results = [], []
    for k in [int(v) for v in cfg["sweep_drop"]]:
        sub = copy.deepcopy(cfg)
        sub["sweep_drop"], sub["drop_last"] = None, k
        result = finetune(sub, run_dir / f"drop_{k}")
        if "stopped_at" in result:
            return result
        results.append(result)
        rows.append({"drop_last": k, **{m: v for m, v in result["metrics"].items() if not isinstance(v, list)},
                     **({"se": result["primary"]["se"], "trained": result["trained"]} if "se" in result["primary"]
                        else {})})
    spec = task(cfg["task"])
    sweep = {"task": cfg["task"], "init": str(cfg["init"]), "metric": spec.primary,
             "higher_is_better": spec.higher_is_better, "variant": results[0]["variant"], "rows": rows}
    if "items" in results[0]:
        sweep["baselines"] = results[0]["baselines"]
        sweep["items"] = {str(r["drop_last"]): r["items"] for r in results}
    if distributed.is_main():
        from mimlens.tasks.figures import layer_drop_figure

        save_json(sweep, run_dir / "drop_sweep.json")
        save_config(cfg, run_dir)
        save_json({"task": cfg["task"], "init": str(cfg["init"]),
                   "primary": {"name": spec.primary, "higher_is_better": spec.higher_is_better},
                   "drop_sweep": [{"drop_last": r["drop_last"], spec.primary: r[spec.primary]} for r in rows],
                   "variant": results[0]["variant"]}, run_dir / "metrics.json")
        layer_drop_figure(sweep, run_dir / "figures" / "layer_drop.png")
    return sweep
