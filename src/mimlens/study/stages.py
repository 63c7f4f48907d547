"""A study as stages: each runs one ``mimlens`` command in a child process (under ``torchrun`` when the study
launches more than one process per stage) and writes that command's usual run folder under ``OUT``:

```
OUT/pretrain/<model>/            mimlens pretrain (models with a pretrain section)
OUT/weights/<model>/             timm pretrained weights or a momentum encoder, as a run folder the others read
OUT/analysis/<model>/            mimlens analyze
OUT/compare/                     mimlens compare (two models or more)
OUT/masks/                       mimlens masks --sweep (the AvgDist of SimMIM's masking settings)
OUT/probe/<model>/               mimlens probe
OUT/finetune/<task>_<model>/     mimlens finetune (supervised models: --sweep-drop over drop_last)
OUT/findings.json, report.html   the findings by role and the report
OUT/stages/<stage>.json, .yaml   each stage's key and record, and the config it ran with
OUT/logs/<stage>.log             each stage's output
```

A stage's key holds everything it reads (its command line, its config, the keys of the stages before it, and
the size and time of every input file), so a finished stage with the same key is reused.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimlens.study.spec import ModelSpec, Study


@dataclass
class StudyStage:
    """One stage: ``argv`` (a mimlens command line) or ``call`` (``("module:function", args)``, run in the
    runner's process or a worker of the pool) writes ``out``; it is done when ``outputs`` exist there and its
    recorded ``key`` matches. ``processes``: torchrun processes; ``config``: the YAML written to
    ``OUT/stages/<name>.yaml`` before it runs."""

    name: str
    kind: str
    model: str
    out: Path
    outputs: tuple[str, ...]
    key: dict[str, Any]
    argv: list[str] | None = None
    call: tuple[str, tuple] | None = None
    needs: tuple[str, ...] = ()
    processes: int = 1
    last: bool = False  # runs once every other stage has finished or failed, whatever failed
    config: dict[str, Any] | None = None
    inputs: tuple[str, ...] = field(default_factory=tuple)  # paths it reads: size and mtime of those on disk
    minutes: float = 0.0  # expected minutes (the study's budget for its kind; a sweep, one per drop setting)

    def act(self) -> None:
        """Run the stage's ``call``."""
        from mimlens.registry import resolve

        resolve(self.call[0])(*self.call[1])


def file_identity(path: str) -> dict[str, Any] | None:
    """Size and modification time of an input file or folder (None when it is not a path on disk)."""
    p = Path(path)
    if not p.exists():
        return None
    stat = p.stat()
    return {"path": str(p), "bytes": stat.st_size if p.is_file() else None, "mtime": round(stat.st_mtime, 3)}


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _deep_merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) \
            else copy.deepcopy(value)
    return out


def needs_export(model: ModelSpec) -> bool:
    """Weights that only ``analyze`` could load as given — timm's pretrained weights, a MoCo v3 momentum
    encoder, a seeded random initialisation (a preset or ``timm:NAME``) — are first written as a run folder every
    command reads. A file or folder source (an absolute path once the study file is read) is read where it is,
    present or not yet: the stages are the same before and after the user puts the file there."""
    return model.pretrain is None and (model.pretrained or model.encoder != "base"
                                       or not Path(model.source).is_absolute())


class _Builder:
    """Collects the stages of one study in running order."""

    def __init__(self, study: Study, out: Path):
        self.study, self.out = study, out
        self.stages: list[StudyStage] = []
        self.keys: dict[str, dict[str, Any]] = {}
        launch = study.launch
        self.device, self.processes = launch["device"], launch["processes"]

    def add(self, stage: StudyStage) -> None:
        if stage.config is not None:
            stage.key = {**stage.key, "config": stage.config}
        stage.key = {**stage.key, "needs": {n: self.keys[n] for n in stage.needs},
                     "inputs": [file_identity(p) for p in stage.inputs]}
        self.keys[stage.name] = stage.key
        self.stages.append(stage)

    def yaml_path(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.yaml"

    # -- where each model's weights come from -------------------------------------------------------------
    def weights(self, model: ModelSpec) -> tuple[list[str], tuple[str, ...], tuple[str, ...]]:
        """(MODEL spelling with ``--arch``, the stages that make the weights, input files): a pre-training's run
        folder, the weights folder of :func:`needs_export` models, else the checkpoint file or run folder."""
        if model.pretrain is not None:
            return [str(self.out / "pretrain" / model.name)], (f"pretrain_{model.name}",), ()
        if needs_export(model):
            return [str(self.out / "weights" / model.name)], (f"weights_{model.name}",), ()
        return [model.source] + (["--arch", model.arch] if model.arch else []), (), (model.source,)

    def pretrain(self, model: ModelSpec) -> None:
        from mimlens.config import load_yaml

        spec = model.pretrain
        recipe = load_yaml(spec["recipe"]) if spec.get("recipe") else {}
        cfg = _deep_merge(recipe, spec.get("overrides") or {})
        out = self.out / "pretrain" / model.name
        argv = ["pretrain", spec["objective"], "--config", str(self.yaml_path(f"pretrain_{model.name}")),
                "--out", str(out), "--device", self.device, "--no-progress"]
        self.add(StudyStage(f"pretrain_{model.name}", f"pretrain_{spec['objective']}", model.name, out,
                            ("backbone.safetensors",), {"argv": argv}, argv, processes=self.processes,
                            config=cfg))

    def export(self, model: ModelSpec) -> None:
        out = self.out / "weights" / model.name
        key = {"source": model.source, "arch": model.arch, "pretrained": model.pretrained,
               "encoder": model.encoder, "seed": model.seed, "kwargs": model.kwargs}
        self.add(StudyStage(f"weights_{model.name}", "weights", model.name, out, ("backbone.safetensors",), key,
                            call=("mimlens.study.weights:export_weights", (model, out)),
                            inputs=(model.source,)))

    # -- the analyses, probes and fine-tunings -------------------------------------------------------------
    def analysis(self, spellings: dict[str, tuple]) -> None:
        settings = self.study.analysis
        cfg = {"data": {"source": settings.get("data", "synthetic"), "num_images": settings.get("num_images", 64),
                        "split": settings.get("split", "train")},
               "analysis": {"names": settings.get("names", ["attention", "cka"]),
                            **{k: settings[k] for k in ("batch_size", "prefix_policy", "cka_unit", "cka_bootstrap",
                                                        "cka_permutations") if k in settings}}}
        cfg = _deep_merge(cfg, settings.get("overrides") or {})
        data_inputs = (cfg["data"]["source"],)
        for name, (spelling, needs, inputs) in spellings.items():
            out = self.out / "analysis" / name
            argv = ["analyze", *spelling, "--config", str(self.yaml_path(f"analyze_{name}")), "--out", str(out),
                    "--device", self.device, "--no-progress"]
            self.add(StudyStage(f"analyze_{name}", "analyze", name, out, ("analysis.json",), {"argv": argv},
                                argv, needs=needs, processes=settings.get("processes", self.processes),
                                config=cfg, inputs=inputs + data_inputs))
        if len(spellings) > 1:
            out = self.out / "compare"
            argv = ["compare", *(str(self.out / "analysis" / n) for n in spellings), "--config",
                    str(self.yaml_path("compare")), "--out", str(out), "--device", self.device, "--no-progress"]
            self.add(StudyStage("compare", "compare", "", out, ("compare.json",), {"argv": argv}, argv,
                                needs=tuple(f"analyze_{n}" for n in spellings),
                                processes=settings.get("processes", self.processes), config=cfg, inputs=data_inputs))

    def probes(self, spellings: dict[str, tuple]) -> None:
        settings = self.study.probes
        cfg = _deep_merge({"probe": {k: settings[k] for k in ("tasks", "data", "num_train", "num_eval", "batch_size",
                                                               "seed") if k in settings}},
                          settings.get("overrides") or {})
        data_inputs = (settings["data"],) if "data" in settings else ()
        for name, (spelling, needs, inputs) in spellings.items():
            out = self.out / "probe" / name
            argv = ["probe", *spelling, "--config", str(self.yaml_path(f"probe_{name}")), "--out", str(out),
                    "--device", self.device, "--no-progress"]
            self.add(StudyStage(f"probe_{name}", "probe", name, out, ("probe.json",), {"argv": argv}, argv,
                                needs=needs, processes=settings.get("processes", self.processes), config=cfg,
                                inputs=inputs + data_inputs))

    def masks(self) -> None:
        settings = self.study.masks
        argv = ["masks", "--sweep", *(f for k in ("img_size", "num_masks") if k in settings
                                      for f in (f"--{k.replace('_', '-')}", str(settings[k]))),
                "--out", str(self.out / "masks")]
        self.add(StudyStage("masks", "masks", "", self.out / "masks", ("avgdist.json",), {"argv": argv}, argv))

    def finetunes(self, spellings: dict[str, tuple]) -> None:
        from mimlens.config import load_yaml

        for spec in self.study.finetune:
            cfg = _deep_merge(load_yaml(spec.recipe) if spec.recipe else {}, spec.overrides)
            data_inputs = (spec.data,)
            for name, (spelling, needs, inputs) in spellings.items():
                sweep = self.study.model(name).role == "supervised" and spec.drop_last != (0,)
                out = self.out / "finetune" / f"{spec.task}_{name}"
                stage = f"finetune_{spec.task}_{name}"
                argv = ["finetune", spec.task, "--init", *spelling, "--data", spec.data, "--out", str(out),
                        "--device", self.device, "--no-progress"]
                if cfg:
                    argv += ["--config", str(self.yaml_path(stage))]
                if sweep:
                    argv += ["--sweep-drop", ",".join(str(k) for k in spec.drop_last)]
                self.add(StudyStage(stage, f"finetune_{spec.task}", name, out,
                                    ("drop_sweep.json",) if sweep else ("metrics.json",), {"argv": argv}, argv,
                                    needs=needs, processes=spec.processes or self.processes, config=cfg or None,
                                    inputs=inputs + data_inputs))


def study_stages(study: Study, out: Path) -> list[StudyStage]:
    """Every stage of ``study`` writing under ``out``, in running order. The findings and the report come last,
    after the other stages have finished or failed: a row whose inputs a failed stage did not write is not
    judged, naming the missing file."""
    builder = _Builder(study, out)
    spellings = {}
    for model in study.models:
        if model.pretrain is not None:
            builder.pretrain(model)
        elif needs_export(model):
            builder.export(model)
        spellings[model.name] = builder.weights(model)
    if study.analysis is not None:
        builder.analysis(spellings)
    if study.masks is not None:
        builder.masks()
    if study.probes is not None:
        builder.probes(spellings)
    builder.finetunes(spellings)
    before = tuple(s.name for s in builder.stages)
    builder.add(StudyStage("findings", "findings", "", out, ("findings.json", "report.html"), {},
                           call=("mimlens.study.closing:findings_and_report", (study, out)), needs=before, last=True))
    return _budgeted(builder.stages, study.budget, study.path)


def _budgeted(stages: list[StudyStage], budget: dict[str, float], path: Path) -> list[StudyStage]:
    """Each stage's expected minutes from ``budget`` (stage kind -> minutes; a drop-last sweep runs one
    fine-tuning per setting); a kind no stage has is an error naming the kinds there are."""
    from mimlens.errors import MimlensError

    kinds = sorted({s.kind for s in stages})
    unknown = sorted(set(budget) - set(kinds))
    if unknown:
        raise MimlensError(f"{path}: budget.{unknown[0]}: no stage of this study has that kind (kinds: "
                           f"{', '.join(kinds)})")
    for stage in stages:
        argv = stage.argv or []
        settings = argv[argv.index("--sweep-drop") + 1].count(",") + 1 if "--sweep-drop" in argv else 1
        stage.minutes = budget.get(stage.kind, 0.0) * settings
    return stages
