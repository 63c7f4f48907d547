"""The demo pipeline: the paper's whole study at tiny scale, as a list of resumable stages.

Each stage runs one ``mimlens`` command in this process (or a small library call) and writes that command's
normal run directory under ``OUT``, so ``mimlens report OUT`` and reruns of any single command work:

```
OUT/pretrain/{random_init,simmim,supervised,moco}/   the same initialisation, then the three pre-trainings
OUT/bars.json                                      the training bars (bars.py)
OUT/analysis/{random_init,simmim,supervised,moco}/ mimlens analyze --cka (validation scenes)
OUT/compare/                                       mimlens compare of the four analyses (cross-model CKA)
OUT/masks/                                         mimlens masks --sweep (AvgDist)
OUT/probe/{random_init,simmim,supervised,moco}/    mimlens probe (layer-wise frozen probes, same items)
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
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimlens.demo.presets import DIFFICULTY, TASKS, MaskSetting, Preset, expected_minutes, sweeps
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


def build_stages(preset: Preset, out: Path, device: str | None = None) -> list[Stage]:
    """Every stage of the demo in running order (see the module docstring for the layout; a masking study's in
    :mod:`mimlens.demo.masking`)."""
    if preset.mask_settings:
        from mimlens.demo import masking

        return masking.build_stages(preset, out, device)
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
    analyses = {m: out / "analysis" / m for m in preset.models}
    # validation scenes of the training difficulty: what the models were trained on, never images they saw
    analysis_cfg = {"data": {"source": f"synthetic:{preset.analysis_images}", "num_images": preset.analysis_images,
                             "split": "val", "synthetic": dict(DIFFICULTY)},
                    "analysis": {"batch_size": preset.analysis_batch}}
    analysis_yaml = out / "stages" / "analysis.yaml"
    flags = ["--config", str(analysis_yaml), "--no-progress"] + (["--device", device] if device else [])
    for m in preset.models:
        argv = ["analyze", str(models[m]), "--cka", *flags, "--out", str(analyses[m])]
        add(f"analyze_{m}", "analyze", m, analyses[m], ("attention.json", "cka.json"),
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
    started_at = time.time()
    save_json({"key": stage.key, "finished": False, "started_at": started_at}, path)
    start, cpu = time.perf_counter(), time.process_time()
    stage.action()
    seconds = time.perf_counter() - start
    save_json({"key": stage.key, "finished": True, "seconds": round(seconds, 2),
               "cpu_seconds": round(time.process_time() - cpu, 2), "expected_minutes": stage.minutes,
               "started_at": started_at, "finished_at": time.time()}, path)
    return seconds


def prepare_out(out: Path, preset: Preset, fresh: bool) -> None:
    """Check that ``out`` is empty or a demo directory (``--fresh`` clears a demo directory)."""
    from mimlens.config import save_config
    from mimlens.rundir import check_out, run_kind

    check_out(out, "demo")
    if out.exists() and any(out.iterdir()):
        if run_kind(out) is None:
            raise MimlensError(f"{out} exists and is not a demo directory (no {out / 'config.yaml'} with a "
                               f"'{MARKER}' key): choose another --out")
        if fresh:
            shutil.rmtree(out)
    save_config({MARKER: {"preset": preset.name, "arch": preset.arch, "arch_kwargs": preset.arch_kwargs,
                          "claims_findings": preset.claims}}, out)


def run_demo(preset: Preset, out: str | Path, *, fresh: bool = False, device: str | None = None,
             parallel: int | None = None, say: Callable[[str], None] | None = None) -> Path:
    """Run (or resume) every stage, then write the findings, figures and ``report.html``; returns its path.

    ``parallel`` (default: the preset's) stages whose inputs are ready run at once, each in a worker
    process with ``preset.threads`` torch threads; 1 runs them one after another in this process.
    """
    import torch

    parallel = preset.parallel if parallel is None else parallel
    if parallel < 1:
        raise MimlensError(f"parallel must be at least 1 (stages run at once), got {parallel}")
    if parallel > 1 and preset.workers:
        raise MimlensError(f"preset {preset.name!r} loads data in {preset.workers} worker processes per run, "
                           "which a stage running in a worker process cannot start: use parallel 1")
    say = say or _say
    out = Path(out)
    prepare_out(out, preset, fresh)
    threads = torch.get_num_threads()
    if preset.threads:
        torch.set_num_threads(preset.threads)
    try:
        return _run_stages(preset, out, device, parallel, say)
    finally:
        torch.set_num_threads(threads)


class _Clock:
    """The remaining-time estimate: the schedule of the stages left (``schedule_minutes``), scaled by how
    fast finished stages ran against their budget once ``PACE_AFTER`` of the budget has run."""

    def __init__(self, total: float, parallel: int, after: float):
        self.total, self.parallel, self.after = total, parallel, after
        self.spent = self.budget_used = 0.0

    def finished(self, stage: Stage, seconds: float) -> None:
        self.spent += seconds / 60
        self.budget_used += stage.minutes

    def left(self, stages: list[Stage]) -> str:
        measured = self.budget_used >= PACE_AFTER * self.total  # too little run yet to tell the machine's pace
        pace = self.spent / self.budget_used if measured else 1.0
        note = f" (running at {pace:.2g}x the budget)" if measured else ""
        return f"about {schedule_minutes(stages, self.parallel, self.after) * pace:.2g} min left{note}"


def ready_stages(waiting: list[Stage], unfinished: set[str]) -> list[Stage]:
    """The waiting stages whose needed stages have all finished, longest budget first (ties in demo order):
    starting the long fine-tunings first keeps both workers busy to the end."""
    return sorted((s for s in waiting if unfinished.isdisjoint(s.needs)), key=lambda s: -s.minutes)


def schedule_minutes(stages: list[Stage], parallel: int, after: float = 0.0) -> float:
    """Wall-clock minutes of running ``stages`` with their budgets the way the demo does: up to ``parallel`` at
    a time, each once the stages it needs have finished (:func:`ready_stages` picks which); plus ``after``
    minutes at the end. Needed stages missing from ``stages`` count as finished."""
    waiting, running, now = list(stages), [], 0.0  # running: (end, stage)
    while waiting or running:
        unfinished = {s.name for s in waiting} | {s.name for _, s in running}
        for stage in ready_stages(waiting, unfinished)[: parallel - len(running)]:
            waiting.remove(stage)
            running.append((now + stage.minutes, stage))
        if not running:
            break  # the rest wait for stages that never run
        running.sort(key=lambda r: r[0])
        now = running.pop(0)[0]
    return now + after


def _run_stages(preset: Preset, out: Path, device: str | None, parallel: int, say: Callable[[str], None]) -> Path:
    if preset.mask_settings:
        from mimlens.demo.masking import write_findings_and_report
    else:
        from mimlens.demo.report import write_findings_and_report

    stages = build_stages(preset, out, device)
    n = len(stages) + 1
    number = {stage.name: i for i, stage in enumerate(stages, 1)}
    findings = expected_minutes(preset, "findings", "")
    total = sum(s.minutes for s in stages) + findings
    wall = schedule_minutes(stages, parallel, findings)
    how = f"{parallel} at a time, {preset.threads or 'all'} torch thread(s) each" if parallel > 1 else "in turn"
    say(f"mimlens demo, preset {preset.name}: {n} stages ({how}), budget {wall:.2g} min; output {out}")
    todo = []
    for stage in stages:
        if is_done(out, stage):
            say(f"[{number[stage.name]}/{n}] {stage.name}: done before, reused")
        else:
            todo.append(stage)
    clock = _Clock(total, parallel, findings)

    def started(stage: Stage, left: list[Stage]) -> None:
        say(f"[{number[stage.name]}/{n}] {stage.name}: expected {stage.minutes:.2g} min; {clock.left(left)}")

    def finished(stage: Stage, seconds: float) -> None:
        clock.finished(stage, seconds)
        say(f"[{number[stage.name]}/{n}] {stage.name}: finished in {seconds / 60:.2f} min")

    if parallel == 1:
        for i, stage in enumerate(todo):
            started(stage, todo[i:])
            finished(stage, run_stage(out, stage))
    else:
        _run_parallel(preset, out, device, parallel, todo, started, finished)
    say(f"[{n}/{n}] findings and report")
    report = write_findings_and_report(out, preset)
    say(f"report: {report}")
    return report


def _run_parallel(preset: Preset, out: Path, device: str | None, parallel: int, todo: list[Stage],
                  started: Callable[[Stage, list[Stage]], None], finished: Callable[[Stage, float], None]) -> None:
    """Run ``todo`` in ``parallel`` worker processes, each stage once the stages it needs have finished
    (:func:`ready_stages` picks which). A failing stage stops the others (pre-trainings resume on a rerun)."""
    import multiprocessing

    waiting, running = list(todo), {}
    pool = multiprocessing.get_context("spawn").Pool(parallel, _worker_init, (preset.threads,))
    try:
        while waiting or running:
            unfinished = {s.name for s in (*waiting, *running.values())}
            for stage in ready_stages(waiting, unfinished)[: parallel - len(running)]:
                waiting.remove(stage)
                started(stage, [*running.values(), stage, *waiting])
                running[pool.apply_async(_run_in_worker, (preset, out, device, stage.name))] = stage
            if not running:
                raise MimlensError(f"stages {', '.join(s.name for s in waiting)} wait for stages that never ran")
            done = [result for result in running if result.ready()]
            if not done:
                time.sleep(0.2)
            for result in done:
                stage = running.pop(result)
                try:
                    seconds = result.get()
                except MimlensError as error:
                    raise MimlensError(f"stage {stage.name}: {error}") from None
                except Exception as error:  # a bug: keep the worker's traceback, say where it happened
                    error.add_note(f"(in demo stage {stage.name}, run in a worker process)")
                    raise
                finished(stage, seconds)
    finally:
        pool.terminate()
        pool.join()


def _worker_init(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _run_in_worker(preset: Preset, out: Path, device: str | None, name: str) -> float:
    """One stage in a worker process: the stages are rebuilt there (their actions are closures)."""
    stage = next(s for s in build_stages(preset, out, device) if s.name == name)
    return run_stage(out, stage)


def _say(text: str) -> None:
    print(text, file=sys.stdout, flush=True)
