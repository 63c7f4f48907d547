"""The demo pipeline: the paper's whole study at tiny scale, as a list of resumable stages.

Each stage runs one ``mimlens`` command in this process (or a small library call) and writes that command's
normal run directory under ``OUT``, so ``mimlens report OUT`` and reruns of any single command work:

```
OUT/pretrain/{random_init,simmim,supervised,moco}/   the same initialisation, then the three pre-trainings
OUT/bars.json                                      the training bars (bars.py)
OUT/analysis/{random_init,simmim,supervised,moco}/ mimlens analyze --cka
OUT/compare/                                       mimlens compare of the four analyses (cross-model CKA)
OUT/masks/                                         mimlens masks --sweep (AvgDist)
OUT/finetune/<task>_<model>/                       mimlens finetune (supervised depth/pose: --sweep-drop)
OUT/findings.json, OUT/figures/, OUT/report.html   verdicts, summary figures, the report
OUT/stages/<stage>.json                            what each stage ran with (its key) and how long it took
```

A stage is done when its outputs exist and its recorded key (the configuration it ran with, and the keys
of the stages it reads) equals the current one; a stage whose key changed is redone from scratch. An
interrupted pre-training with an unchanged key resumes from its checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimlens.demo.presets import DIFFICULTY, MODELS, OBJECTIVES, TASKS, Preset, expected_minutes, sweeps
from mimlens.errors import MimlensError

MARKER = "demo"  # top-level key of OUT/config.yaml
PACE_AFTER = 0.05  # scale the remaining budget by the measured pace once this fraction of it has run


@dataclass
class Stage:
    """One step of the demo: ``action()`` writes ``out``; done when ``outputs`` exist and ``key`` matches."""

    name: str
    out: Path
    outputs: tuple[str, ...]
    key: dict[str, Any]
    action: Callable[[], None]
    minutes: float
    resumable: bool = False  # a pre-training resumes from its checkpoint instead of starting over


def image_size(preset: Preset) -> int:
    from mimlens.models import PRESETS

    size = preset.arch_kwargs.get("img_size") or PRESETS[preset.arch].img_size
    return int(size)


def command(argv: list[str]) -> None:
    """Run ``mimlens ARGV`` in this process; a non-zero status is an error naming the command."""
    from mimlens.cli import build_parser

    args = build_parser().parse_args(argv)
    status = int(args._run(args) or 0)
    if status:
        raise MimlensError(f"stage command 'mimlens {' '.join(argv)}' exited with status {status}")


def _write_yaml(cfg: dict[str, Any], path: Path) -> Path:
    import yaml

    from mimlens.io import save_text

    return save_text(yaml.safe_dump(cfg, sort_keys=False), path)


def pretrain_config(preset: Preset, objective: str, device: str) -> dict[str, Any]:
    """The ``mimlens pretrain --config`` YAML of one objective (SPEC §7's changed recipe at the preset's size)."""
    cfg: dict[str, Any] = {
        "objective": objective,
        "model": {"name": preset.arch, "kwargs": dict(preset.arch_kwargs)},
        "data": {"source": f"synthetic:{preset.pretrain_images}", "synthetic": dict(DIFFICULTY),
                 "crop_scale": [0.2, 1.0] if objective == "moco" else [0.67, 1.0]},
        "optim": {"base_lr": preset.base_lr, "batch_size": preset.batch_size, "warmup_steps": preset.warmup_steps},
        "train": {"steps": preset.pretrain_steps[objective], "seed": preset.seed, "log_every": 10},
        "run": {"device": device, "num_workers": preset.workers},
    }
    if objective == "simmim":
        cfg["simmim"] = {"mask_ratio": 0.6, "mask_patch": preset.mask_patch}
    if objective == "moco":
        cfg["moco"] = {"dim": preset.moco_dims[0], "mlp_dim": preset.moco_dims[1]}
        cfg["optim"].update(weight_decay=0.1, clip_grad=None)
    return cfg


def finetune_config(preset: Preset, task: str, init: Path, device: str, sweep: bool) -> dict[str, Any]:
    """The ``mimlens finetune --config`` YAML of one task; ``track`` counts sequences instead of images."""
    track = task == "track"
    count = max(4, preset.finetune_images // preset.sequence_length) if track else preset.finetune_images
    return {
        "task": task, "init": str(init),
        "sweep_drop": list(preset.sweep_drop) if sweep else None,
        "data": {"source": f"synthetic:{count}", "num_eval": preset.eval_sequences if track else preset.eval_images,
                 "synthetic": dict(DIFFICULTY)},
        "cls": {"label": "fine_label"},
        "track": {"sequence_length": preset.sequence_length},
        "optim": {"batch_size": preset.batch_size, "warmup_steps": max(1, preset.finetune_steps // 10)},
        "train": {"steps": preset.finetune_steps, "seed": preset.seed},
        "run": {"device": device, "num_workers": preset.workers},
    }


def build_stages(preset: Preset, out: Path, device: str | None = None) -> list[Stage]:
    """Every stage of the demo in running order (see the module docstring for the layout)."""
    run_device = device or "auto"
    stages: list[Stage] = []
    keys: dict[str, dict[str, Any]] = {}

    def add(name: str, kind: str, model: str, out_dir: Path, outputs: tuple[str, ...], key: dict[str, Any],
            action: Callable[[], None], resumable: bool = False) -> None:
        keys[name] = key
        stages.append(Stage(name, out_dir, outputs, key, action, expected_minutes(preset, kind, model), resumable))

    models = {m: out / "pretrain" / m for m in MODELS}
    init_key = {"arch": preset.arch, "kwargs": preset.arch_kwargs, "seed": preset.seed}
    add("init", "init", "random_init", models["random_init"], ("config.yaml", "backbone.safetensors"), init_key,
        lambda: save_initialisation(preset, models["random_init"]))
    for objective in OBJECTIVES:
        cfg = pretrain_config(preset, objective, run_device)
        path = out / "stages" / f"pretrain_{objective}.yaml"
        argv = ["pretrain", objective, "--config", str(path), "--out", str(models[objective])]
        add(f"pretrain_{objective}", f"pretrain_{objective}", objective, models[objective],
            ("backbone.safetensors", "log.jsonl"), {"config": _without_run(cfg), "init": init_key},
            _yaml_command(cfg, path, argv), resumable=True)
    bars_key = {"images": preset.bar_images, "simmim": keys["pretrain_simmim"],
                "supervised": keys["pretrain_supervised"]}
    add("bars", "bars", "", out, ("bars.json",), bars_key, lambda: write_bars(out, preset.bar_images))
    analyses = {m: out / "analysis" / m for m in MODELS}
    data = ["--data", f"synthetic:{preset.analysis_images}", "--num-images", str(preset.analysis_images),
            "--batch-size", str(preset.analysis_batch), "--no-progress"] + (["--device", device] if device else [])
    for m in MODELS:
        argv = ["analyze", str(models[m]), "--cka", *data, "--out", str(analyses[m])]
        add(f"analyze_{m}", "analyze", m, analyses[m], ("attention.json", "cka.json"),
            {"argv": argv[:-2], "model": keys["init" if m == "random_init" else f"pretrain_{m}"]},
            _command(argv))
    argv = ["compare", *(str(analyses[m]) for m in MODELS), *data, "--out", str(out / "compare")]
    add("compare", "compare", "", out / "compare", ("compare.json", "cka_across.json"),
        {"argv": argv[:-2], "analyses": [keys[f"analyze_{m}"] for m in MODELS]}, _command(argv))
    argv = ["masks", "--sweep", "--img-size", str(image_size(preset)), "--num-masks", str(preset.mask_samples),
            "--out", str(out / "masks")]
    add("masks", "masks", "", out / "masks", ("avgdist.json",), {"argv": argv[:-2]}, _command(argv))
    for task in TASKS:
        for m in MODELS:
            sweep = sweeps(preset, task, m)
            cfg = finetune_config(preset, task, models[m], run_device, sweep)
            path = out / "stages" / f"finetune_{task}_{m}.yaml"
            run_dir = out / "finetune" / f"{task}_{m}"
            add(f"finetune_{task}_{m}", f"finetune_{task}", m, run_dir,
                ("drop_sweep.json",) if sweep else ("metrics.json",),
                {"config": _without_run(cfg), "model": keys["init" if m == "random_init" else f"pretrain_{m}"]},
                _yaml_command(cfg, path, ["finetune", task, "--config", str(path), "--out", str(run_dir)]))
    return stages


def _without_run(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config without its ``run`` section (device and the like do not change what a stage computes)."""
    return {k: v for k, v in cfg.items() if k != "run"}


def _command(argv: list[str]) -> Callable[[], None]:
    return lambda: command(argv)


def _yaml_command(cfg: dict[str, Any], path: Path, argv: list[str]) -> Callable[[], None]:
    def action() -> None:
        _write_yaml(cfg, path)
        command(argv)

    return action


def save_initialisation(preset: Preset, run_dir: Path) -> None:
    """The random initialisation every pre-training starts from (same seed, same architecture), as a run
    directory that ``load_model`` reads: ``config.yaml`` + ``backbone.safetensors``."""
    from mimlens.config import save_config
    from mimlens.engine import seed_everything
    from mimlens.models import build_model
    from mimlens.models.load import model_section, save_backbone

    seed_everything(preset.seed)
    model = build_model(preset.arch, **preset.arch_kwargs)
    save_backbone(model, run_dir / "backbone.safetensors")
    save_config({"model": model_section(preset.arch, preset.arch_kwargs),
                 "weights": f"random init (seed {preset.seed})"}, run_dir)


def write_bars(out: Path, num_images: int) -> None:
    from mimlens.demo.bars import training_bars
    from mimlens.io import save_json

    save_json(training_bars(out / "pretrain", num_images), out / "bars.json")


# ---------------------------------------------------------------------------------------------- running


def _record(out: Path, stage: Stage) -> dict[str, Any] | None:
    path = out / "stages" / f"{stage.name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def is_done(out: Path, stage: Stage) -> bool:
    record = _record(out, stage)
    return (record is not None and record.get("finished") is True and record.get("key") == _plain(stage.key)
            and all((stage.out / name).is_file() for name in stage.outputs))


def _plain(obj: Any) -> Any:
    """``obj`` as JSON gives it back (tuples become lists), so recorded and current keys compare equal."""
    return json.loads(json.dumps(obj))


def run_stage(out: Path, stage: Stage) -> float:
    """Run one stage (clearing stale outputs first) and record it; returns the seconds it took."""
    from mimlens.io import save_json

    record = _record(out, stage)
    same_key = record is not None and record.get("key") == _plain(stage.key)
    if stage.out != out and stage.out.exists() and not (stage.resumable and same_key):
        shutil.rmtree(stage.out)
    path = out / "stages" / f"{stage.name}.json"
    save_json({"key": stage.key, "finished": False}, path)
    start, cpu = time.perf_counter(), time.process_time()
    stage.action()
    seconds = time.perf_counter() - start
    save_json({"key": stage.key, "finished": True, "seconds": round(seconds, 2),
               "cpu_seconds": round(time.process_time() - cpu, 2), "expected_minutes": stage.minutes}, path)
    return seconds


def prepare_out(out: Path, preset: Preset, fresh: bool) -> None:
    """Check that ``out`` is empty or a demo directory (``--fresh`` clears a demo directory)."""
    from mimlens.config import load_yaml, save_config

    config = out / "config.yaml"
    if out.exists() and any(out.iterdir()):
        if not config.is_file() or MARKER not in load_yaml(config):
            raise MimlensError(f"{out} exists and is not a demo directory (no {config} with a 'demo' key): "
                               "choose another --out")
        if fresh:
            shutil.rmtree(out)
    save_config({MARKER: {"preset": preset.name, "arch": preset.arch, "arch_kwargs": preset.arch_kwargs,
                          "claims_findings": preset.claims}}, out)


def run_demo(preset: Preset, out: str | Path, *, fresh: bool = False, device: str | None = None,
             say: Callable[[str], None] | None = None) -> Path:
    """Run (or resume) every stage, then write the findings, figures and ``report.html``; returns its path."""
    import torch

    say = say or _say
    out = Path(out)
    prepare_out(out, preset, fresh)
    threads = torch.get_num_threads()
    if preset.threads:
        torch.set_num_threads(preset.threads)
    try:
        return _run_stages(preset, out, device, say)
    finally:
        torch.set_num_threads(threads)


def _run_stages(preset: Preset, out: Path, device: str | None, say: Callable[[str], None]) -> Path:
    from mimlens.demo.report import write_findings_and_report

    stages = build_stages(preset, out, device)
    total = sum(s.minutes for s in stages) + expected_minutes(preset, "findings", "")
    say(f"mimlens demo, preset {preset.name}: {len(stages) + 1} stages, budget {total:.2g} min; output {out}")
    spent = budget_used = 0.0
    timings: dict[str, float] = {}
    for i, stage in enumerate(stages, 1):
        remaining = sum(s.minutes for s in stages[i - 1:]) + expected_minutes(preset, "findings", "")
        if is_done(out, stage):
            say(f"[{i}/{len(stages) + 1}] {stage.name}: done before, reused")
            timings[stage.name] = float((_record(out, stage) or {}).get("seconds", math.nan))
            continue
        measured = budget_used >= PACE_AFTER * total  # too little run yet to tell the machine's pace
        pace = spent / budget_used if measured else 1.0
        say(f"[{i}/{len(stages) + 1}] {stage.name}: expected {stage.minutes:.2g} min; about "
            f"{remaining * pace:.2g} min left{f' (running at {pace:.2g}x the budget)' if measured else ''}")
        seconds = run_stage(out, stage)
        timings[stage.name] = seconds
        spent, budget_used = spent + seconds / 60, budget_used + stage.minutes
        say(f"[{i}/{len(stages) + 1}] {stage.name}: finished in {seconds / 60:.2f} min")
    say(f"[{len(stages) + 1}/{len(stages) + 1}] findings and report")
    report = write_findings_and_report(out, preset, stages, timings)
    say(f"report: {report}")
    return report


def _say(text: str) -> None:
    print(text, file=sys.stdout, flush=True)
