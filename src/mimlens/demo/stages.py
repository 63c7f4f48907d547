"""The demo's stages: what each runs (one ``mimlens`` command, or a small library call, writing that command's
normal run directory under ``OUT``), the configurations they run with, and the keys that say when a finished
stage can be reused. The runner is :mod:`mimlens.demo.pipeline`; a masking study's stages are in
:mod:`mimlens.demo.masking`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimlens.demo.presets import DIFFICULTY, TASKS, MaskSetting, Preset, expected_minutes, sweeps
from mimlens.errors import MimlensError

MARKER = "demo"  # top-level key of OUT/config.yaml
ANALYSIS_NAMES = ("attention", "diagnostics", "cka")  # what analyze measures of each model and compare of them all


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
    needs: tuple[str, ...] = ()  # stages whose outputs this one reads


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


def pretrain_config(preset: Preset, objective: str, device: str, mask: MaskSetting | None = None
                    ) -> dict[str, Any]:
    """The ``mimlens pretrain --config`` YAML of one objective (the tiny CPU recipe at the preset's size); SimMIM
    masks 60 % of ``preset.mask_patch`` blocks unless ``mask`` says otherwise."""
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
        mask = mask or MaskSetting(preset.mask_patch, 0.6)
        cfg["simmim"] = {"mask_ratio": mask.ratio, "mask_patch": mask.mask_patch}
    if objective == "moco":
        cfg["moco"] = {"dim": preset.moco_dims[0], "mlp_dim": preset.moco_dims[1]}
        cfg["optim"].update(weight_decay=0.1, clip_grad=None)
    return cfg


def finetune_config(preset: Preset, task: str, init: Path, device: str, sweep: bool) -> dict[str, Any]:
    """The ``mimlens finetune --config`` YAML of one task; ``track`` counts sequences instead of images."""
    track = task == "track"
    count = max(4, preset.finetune_images // preset.sequence_length) if track else preset.finetune_images
    cfg = {
        "task": task, "init": str(init),
        "sweep_drop": list(preset.sweep_drop) if sweep else None,
        "data": {"source": f"synthetic:{count}", "num_eval": preset.eval_sequences if track else preset.eval_images,
                 "synthetic": dict(DIFFICULTY)},
        "cls": {"label": "fine_label"},
        # two deconvolutions (a map at half the input resolution, upsampled bilinearly): the third one, 64
        # channels at full resolution, costs more than the ViT-Tiny backbone it decodes
        "depth": {"num_deconv": 2},
        "track": {"sequence_length": preset.sequence_length},
        "optim": {"batch_size": preset.batch_size, "warmup_steps": max(1, preset.finetune_steps // 10)},
        "train": {"steps": preset.finetune_steps, "seed": preset.seed},
        "run": {"device": device, "num_workers": preset.workers},
    }
    if task == "pose":
        # heatmaps one token wide (the frozen probe's target) and twice the lr: with SimpleBaseline's sigma of
        # half a token and lr 5e-4, a 200-step fine-tuning of the SimMIM model stayed below the keypoint-template
        # baseline (docs/demo.md)
        cfg["pose"] = {"sigma": 4.0}
        cfg["optim"]["base_lr"] = 8e-3
    return cfg


def probe_config(preset: Preset) -> dict[str, Any]:
    """The ``mimlens probe --config`` YAML: the preset's probe tasks on its probe images of the training
    difficulty, seeded like the fine-tunings (so every model is probed on the same items)."""
    num_train, num_eval = preset.probe_images
    return {"probe": {"tasks": list(preset.probe_tasks), "num_train": num_train, "num_eval": num_eval,
                      "seed": preset.seed, "batch_size": preset.analysis_batch, "synthetic": dict(DIFFICULTY)}}


def _analysis_stages(preset: Preset, out: Path, device: str | None, models: dict[str, Path], add: Callable,
                     keys: dict[str, dict[str, Any]], trained: Callable[[str], str]) -> None:
    """The analyses (and their comparison), the AvgDist sweep and the frozen probes of every model, added in
    the demo's order with ``add``; ``keys`` holds the keys of the stages added before."""
    analyses = {m: out / "analysis" / m for m in preset.models}
    # validation scenes of the training difficulty: what the models were trained on, never images they saw
    analysis_cfg = {"data": {"source": f"synthetic:{preset.analysis_images}", "num_images": preset.analysis_images,
                             "split": "val", "synthetic": dict(DIFFICULTY)},
                    "analysis": {"batch_size": preset.analysis_batch, "names": list(ANALYSIS_NAMES)}}
    analysis_yaml = out / "stages" / "analysis.yaml"
    flags = ["--config", str(analysis_yaml), "--no-progress"] + (["--device", device] if device else [])
    for m in preset.models:
        argv = ["analyze", str(models[m]), *flags, "--out", str(analyses[m])]
        add(f"analyze_{m}", "analyze", m, analyses[m], tuple(f"{name}.json" for name in ANALYSIS_NAMES),
            {"argv": argv[:-2], "config": analysis_cfg, "model": keys[trained(m)]},
            _yaml_command(analysis_cfg, analysis_yaml, argv), needs=(trained(m),))
    argv = ["compare", *(str(analyses[m]) for m in preset.models), *flags, "--out", str(out / "compare")]
    add("compare", "compare", "", out / "compare", ("compare.json", "cka_across.json"),
        {"argv": argv[:-2], "config": analysis_cfg, "analyses": [keys[f"analyze_{m}"] for m in preset.models]},
        _yaml_command(analysis_cfg, analysis_yaml, argv), needs=tuple(f"analyze_{m}" for m in preset.models))
    argv = ["masks", "--sweep", "--img-size", str(image_size(preset)), "--num-masks", str(preset.mask_samples),
            "--out", str(out / "masks")]
    add("masks", "masks", "", out / "masks", ("avgdist.json",), {"argv": argv[:-2]}, _command(argv))
    probe_cfg = probe_config(preset)
    probe_yaml = out / "stages" / "probe.yaml"
    for m in preset.models:
        argv = ["probe", str(models[m]), "--config", str(probe_yaml), "--no-progress",
                *(["--device", device] if device else []), "--out", str(out / "probe" / m)]
        add(f"probe_{m}", "probe", m, out / "probe" / m, ("probe.json",),
            {"argv": argv[:-2], "config": probe_cfg, "model": keys[trained(m)]},
            _yaml_command(probe_cfg, probe_yaml, argv), needs=(trained(m),))


def demo_stages(preset: Preset, out: Path, device: str | None = None) -> list[Stage]:
    """Every stage of a demo preset in running order (the layout in :mod:`mimlens.demo.pipeline`)."""
    run_device = device or "auto"
    stages: list[Stage] = []
    keys: dict[str, dict[str, Any]] = {}

    def add(name: str, kind: str, model: str, out_dir: Path, outputs: tuple[str, ...], key: dict[str, Any],
            action: Callable[[], None], resumable: bool = False, needs: tuple[str, ...] = ()) -> None:
        keys[name] = key
        stages.append(Stage(name, out_dir, outputs, key, action, expected_minutes(preset, kind, model), resumable,
                            needs))

    def trained(model: str) -> str:
        return "init" if model == "random_init" else f"pretrain_{model}"

    models = {m: out / "pretrain" / m for m in preset.models}
    init_key = {"arch": preset.arch, "kwargs": preset.arch_kwargs, "seed": preset.seed}
    add("init", "init", "random_init", models["random_init"], ("config.yaml", "backbone.safetensors"), init_key,
        lambda: save_initialisation(preset, models["random_init"]))
    for objective in preset.objectives:
        cfg = pretrain_config(preset, objective, run_device)
        path = out / "stages" / f"pretrain_{objective}.yaml"
        argv = ["pretrain", objective, "--config", str(path), "--out", str(models[objective])]
        add(f"pretrain_{objective}", f"pretrain_{objective}", objective, models[objective],
            ("backbone.safetensors", "log.jsonl"), {"config": _without_run(cfg), "init": init_key},
            _yaml_command(cfg, path, argv), resumable=True, needs=("init",))
    bars_key = {"images": preset.bar_images, "simmim": keys["pretrain_simmim"],
                "supervised": keys["pretrain_supervised"]}
    add("bars", "bars", "", out, ("bars.json",), bars_key, lambda: write_bars(out, preset.bar_images),
        needs=("pretrain_simmim", "pretrain_supervised"))
    _analysis_stages(preset, out, device, models, add, keys, trained)
    for task in TASKS:
        for m in preset.models:
            sweep = sweeps(preset, task, m)
            cfg = finetune_config(preset, task, models[m], run_device, sweep)
            path = out / "stages" / f"finetune_{task}_{m}.yaml"
            run_dir = out / "finetune" / f"{task}_{m}"
            add(f"finetune_{task}_{m}", f"finetune_{task}", m, run_dir,
                ("drop_sweep.json",) if sweep else ("metrics.json",),
                {"config": _without_run(cfg), "model": keys[trained(m)]},
                _yaml_command(cfg, path, ["finetune", task, "--config", str(path), "--out", str(run_dir)]),
                needs=(trained(m),))
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
    from mimlens.models.load import model_section
    from mimlens.models.snapshots import save_backbone

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
