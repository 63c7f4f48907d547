"""The masking study (F2): SimMIM pre-trained from one initialisation at several masking settings, each with its
AvgDist, training bar, attention distance, frozen probes and geometric fine-tunings, and the F2 verdict.

``mimlens demo --preset masking`` writes (by default to ``runs/demo-default/masking``: inside the default demo's
folder, whose F2 row then reports this study):

```
OUT/masks/                      mimlens masks --sweep: AvgDist of the paper's grid of settings, the moderate band
OUT/pretrain/<setting>/         mimlens pretrain simmim with that masking (p8_r0.2: 8 px blocks, 20 % masked)
OUT/bars.json                   per setting: masked L1 against the nearest-visible and mean fills (bars.py)
OUT/analysis/<setting>/         mimlens analyze (attention distance per layer)
OUT/probe/<setting>/            mimlens probe (frozen probes of every block on the geometric tasks)
OUT/finetune/<task>_<setting>/  mimlens finetune on the geometric tasks (depth, pose)
OUT/findings.json, OUT/figures/, OUT/report.html
```

Every setting starts from the same initial weights (same architecture and seed) and has the same recipe and
steps; only the masking differs. Stages resume as the demo's do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mimlens.demo import stages as st
from mimlens.demo.presets import Preset, expected_minutes
from mimlens.errors import MimlensError
from mimlens.findings import rules as fd
from mimlens.findings.folder import MASKING_FOLDER

FIGURES = ["figures/f2_transfer.png", "figures/f2_attention.png", "figures/training_bars.png",
           "masks/figures/avgdist.png"]


def build_stages(preset: Preset, out: Path, device: str | None = None) -> list:
    """Every stage of the study in running order (the module docstring gives the layout)."""

    run_device = device or "auto"
    stages: list[st.Stage] = []
    keys: dict[str, dict[str, Any]] = {}

    def add(name: str, kind: str, model: str, out_dir: Path, outputs: tuple[str, ...], key: dict[str, Any],
            action, resumable: bool = False, needs: tuple[str, ...] = ()) -> None:
        keys[name] = key
        stages.append(st.Stage(name, out_dir, outputs, key, action, expected_minutes(preset, kind, model),
                               resumable, needs))

    names = [s.name for s in preset.mask_settings]
    runs = {n: out / "pretrain" / n for n in names}
    init_key = {"arch": preset.arch, "kwargs": preset.arch_kwargs, "seed": preset.seed}  # the same initial weights
    argv = ["masks", "--sweep", "--img-size", str(st.image_size(preset)), "--num-masks", str(preset.mask_samples),
            "--out", str(out / "masks")]
    add("masks", "masks", "", out / "masks", ("avgdist.json",), {"argv": argv[:-2]}, st._command(argv))
    for setting in preset.mask_settings:
        cfg = st.pretrain_config(preset, "simmim", run_device, setting)
        path = out / "stages" / f"pretrain_{setting.name}.yaml"
        argv = ["pretrain", "simmim", "--config", str(path), "--out", str(runs[setting.name])]
        add(f"pretrain_{setting.name}", "pretrain_simmim", setting.name, runs[setting.name],
            ("backbone.safetensors", "log.jsonl"), {"config": st._without_run(cfg), "init": init_key},
            st._yaml_command(cfg, path, argv), resumable=True)
    bars_key = {"images": preset.bar_images, **{n: keys[f"pretrain_{n}"] for n in names}}
    add("bars", "bars", "", out, ("bars.json",), bars_key, lambda: write_bars(out, names, preset.bar_images),
        needs=tuple(f"pretrain_{n}" for n in names))
    analysis_cfg = {"data": {"source": f"synthetic:{preset.analysis_images}", "num_images": preset.analysis_images,
                             "split": "val", "synthetic": dict(st.DIFFICULTY)},
                    "analysis": {"batch_size": preset.analysis_batch}}
    analysis_yaml = out / "stages" / "analysis.yaml"
    probe_cfg = st.probe_config(preset)
    probe_yaml = out / "stages" / "probe.yaml"
    device_flags = ["--device", device] if device else []
    for command, folder, cfg, yaml_path, output in (
            ("analyze", "analysis", analysis_cfg, analysis_yaml, "attention.json"),
            ("probe", "probe", probe_cfg, probe_yaml, "probe.json")):
        for n in names:
            run_dir = out / folder / n
            argv = [command, str(runs[n]), "--config", str(yaml_path), "--no-progress", *device_flags,
                    "--out", str(run_dir)]
            add(f"{command}_{n}", command, n, run_dir, (output,),
                {"argv": argv[:-2], "config": cfg, "model": keys[f"pretrain_{n}"]},
                st._yaml_command(cfg, yaml_path, argv), needs=(f"pretrain_{n}",))
    for task in preset.tasks:
        for n in names:
            cfg = st.finetune_config(preset, task, runs[n], run_device, sweep=False)
            path = out / "stages" / f"finetune_{task}_{n}.yaml"
            run_dir = out / "finetune" / f"{task}_{n}"
            add(f"finetune_{task}_{n}", f"finetune_{task}", n, run_dir, ("metrics.json",),
                {"config": st._without_run(cfg), "model": keys[f"pretrain_{n}"]},
                st._yaml_command(cfg, path, ["finetune", task, "--config", str(path), "--out", str(run_dir)]),
                needs=(f"pretrain_{n}",))
    return stages


def write_bars(out: Path, names: Sequence[str], num_images: int) -> None:
    """``bars.json``: each setting's SimMIM bar (masked L1 against the fills, on that setting's masks)."""
    from mimlens.demo.bars import simmim_bar
    from mimlens.io import save_json

    save_json({n: simmim_bar(out / "pretrain" / n, num_images) for n in names}, out / "bars.json")


# ---------------------------------------------------------------------------------------------- findings


def study_documents(out: Path, preset: Preset) -> dict[str, Any]:
    """The JSON documents F2 is judged from, read from the study's folder."""
    from mimlens.demo.findings_stage import stage_json

    names = [s.name for s in preset.mask_settings]
    return {
        "avgdist": stage_json(out / "masks" / "avgdist.json"),
        "settings": [(s.name, s.mask_patch, s.ratio) for s in preset.mask_settings],
        "finetunes": {t: {n: stage_json(out / "finetune" / f"{t}_{n}" / "metrics.json") for n in names}
                      for t in preset.tasks},
        "attention": {n: stage_json(out / "analysis" / n / "attention.json") for n in names},
        "probes": {n: stage_json(out / "probe" / n / "probe.json") for n in names},
        "bars": stage_json(out / "bars.json"),
    }


# ---------------------------------------------------------------------------------------------- figures


def _settings(docs: dict[str, Any]) -> tuple[list[str], list[float]]:
    """The settings' names and AvgDist (px), in the preset's order."""
    return [n for n, _, _ in docs["settings"]], [fd.avg_dist_of(docs["avgdist"], p, r) for _, p, r in docs["settings"]]


def _save(figure, path: Path) -> Path:
    from mimlens.report.style import save_png

    figure.tight_layout()
    return save_png(figure, path, dpi=110)


def _against_avgdist(axes, dist: Sequence[float], values: Sequence[float], errors: Sequence[float] | None,
                     names: Sequence[str], band: Sequence[float], colour: str) -> None:
    """One metric against AvgDist (log axis) with ±1 SE bars, the settings named, the moderate band shaded."""
    axes.axvspan(band[0], band[1], color="#2b59c3", alpha=0.12, label="moderate band")
    axes.errorbar(dist, values, yerr=errors, marker="o", color=colour, capsize=3, linewidth=1.2)
    for x, y, name in zip(dist, values, names, strict=True):
        axes.annotate(name, (x, y), textcoords="offset points", xytext=(3, 4), fontsize=6)
    avgdist_axis(axes, dist)


def avgdist_axis(axes, dist: Sequence[float]) -> None:
    """A log AvgDist axis ticked at the settings' values only."""
    from matplotlib.ticker import NullFormatter

    axes.set_xscale("log")
    axes.set_xticks(list(dist), [f"{d:.2g}" for d in dist], fontsize=7)
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.margins(x=0.15)  # room for the settings' names
    axes.set_xlabel("AvgDist (px)", fontsize=8)


def transfer_figure(docs: dict[str, Any], path: Path) -> Path:
    """F2 in the paper's Figure 2a form: each fine-tuning's metric (top row) and each frozen probe's best-block
    metric (bottom row) against the setting's AvgDist, ±1 SE, the best trivial baseline dashed, the band shaded."""
    from matplotlib.figure import Figure

    names, dist = _settings(docs)
    band = docs["avgdist"]["moderate_band_px"]
    probe_tasks = sorted({t for d in docs["probes"].values() for t in d["tasks"]})
    width = max(len(docs["finetunes"]), len(probe_tasks))
    figure = Figure(figsize=(3.2 * width, 6.0))
    grid = figure.subplots(2, width, squeeze=False)
    for axes, (task, runs) in zip(grid[0], docs["finetunes"].items(), strict=False):
        primary = runs[names[0]]["primary"]
        _against_avgdist(axes, dist, [runs[n]["primary"]["value"] for n in names],
                         [runs[n]["primary"].get("se") or 0.0 for n in names], names, band, "#d62728")
        baselines = {label: base[primary["name"]] for label, base in (runs[names[0]].get("baselines") or {}).items()}
        if baselines:  # the best one, which a fine-tuning must beat to count as trained
            label = (max if primary["higher_is_better"] else min)(baselines, key=baselines.get)
            axes.axhline(baselines[label], color="0.3", linestyle="--", linewidth=1, label=label)
        axes.legend(fontsize=6)
        arrow = "higher" if primary["higher_is_better"] else "lower"
        axes.set_title(f"fine-tuned {task}: {primary['name']} ({arrow} is better)", fontsize=8)
    for axes, task in zip(grid[1], probe_tasks, strict=False):
        specs = [docs["probes"][n]["tasks"][task] for n in names]
        metric = specs[0]["primary"]
        best = [fd.best_row(spec) for spec in specs]
        _against_avgdist(axes, dist, [b[metric] for b in best], [b.get("se") or 0.0 for b in best],
                         names, band, "#1f77b4")
        arrow = "higher" if specs[0]["higher_is_better"] else "lower"
        axes.set_title(f"frozen probe {task}, best block: {metric} ({arrow} is better)", fontsize=8)
    for row, used in zip(grid, (len(docs["finetunes"]), len(probe_tasks)), strict=True):
        for axes in row[used:]:
            axes.set_visible(False)
    figure.suptitle("Transfer against AvgDist (F2)", fontsize=10)
    return _save(figure, path)


def attention_figure(docs: dict[str, Any], path: Path) -> Path:
    """Mean attention distance against AvgDist: the mean over layers (thick) and each layer (thin)."""
    from matplotlib.figure import Figure

    names, dist = _settings(docs)
    layers = [fd.layer_means(docs["attention"][n], "distance_px") for n in names]
    figure = Figure(figsize=(5.0, 3.6))
    axes = figure.subplots()
    _against_avgdist(axes, dist, [sum(v) / len(v) for v in layers], None, names, docs["avgdist"]["moderate_band_px"],
                     "k")
    for i in range(len(layers[0])):
        axes.plot(dist, [v[i] for v in layers], linewidth=0.7, alpha=0.6, label=f"block {i}")
    axes.set_ylabel("mean attention distance (px)", fontsize=8)
    axes.legend(fontsize=6, ncol=2)
    axes.set_title("Attention distance against AvgDist (mean over heads; thick: over blocks)", fontsize=8)
    return _save(figure, path)


def bars_figure(docs: dict[str, Any], path: Path) -> Path:
    """Each setting's masked L1 next to its nearest-visible and mean fills, against AvgDist."""
    from matplotlib.figure import Figure

    names, dist = _settings(docs)
    figure = Figure(figsize=(5.0, 3.6))
    axes = figure.subplots()
    axes.axvspan(*docs["avgdist"]["moderate_band_px"], color="#2b59c3", alpha=0.12, label="moderate band")
    for key, label, style in (("masked_l1", "SimMIM", "o-"), ("nearest_fill_l1", "nearest-visible fill", "s--"),
                              ("mean_fill_l1", "mean fill", "^:")):
        axes.plot(dist, [docs["bars"][n][key] for n in names], style, label=label)
    avgdist_axis(axes, dist)
    axes.set_ylabel("L1 on masked pixels (normalised)", fontsize=8)
    axes.legend(fontsize=7)
    axes.set_title("Training bars: SimMIM against the fills of its own masks", fontsize=8)
    return _save(figure, path)


def about(preset: Preset) -> dict[str, Any]:
    settings = ", ".join(f"{s.name} ({s.mask_patch} px blocks, {s.ratio:.0%} masked)" for s in preset.mask_settings)
    return {"preset": preset.name, "architecture": preset.arch, "masking settings": settings,
            "pre-training steps": f"SimMIM {preset.pretrain_steps['simmim']} per setting (batch {preset.batch_size})",
            "fine-tuning": f"{', '.join(preset.tasks)}, {preset.finetune_steps} steps",
            "frozen probes": ", ".join(preset.probe_tasks), "findings claimed": "yes" if preset.claims else "no"}


def write_findings_and_report(out: Path, preset: Preset) -> Path:
    """``findings.json`` (the F2 row), the study's figures and ``report.html``; then, when the study lies in a
    finished demo's folder, that demo's findings and report again so that its F2 row reports this study."""
    from mimlens.io import finite, save_json
    from mimlens.report.html import build_report

    docs = study_documents(out, preset)
    transfer_figure(docs, out / "figures" / "f2_transfer.png")
    attention_figure(docs, out / "figures" / "f2_attention.png")
    bars_figure(docs, out / "figures" / "training_bars.png")
    row = finite(fd.f2_masking(**docs, claims=preset.claims))
    rows = [{**row, "figures": [f for f in FIGURES if (out / f).is_file()]}]
    smoke = f"{fd.QUICK_REASON}: a smoke run of every stage; F2 is not judged."
    save_json({"preset": preset.name, "claims_findings": preset.claims, "rules_version": fd.RULES_VERSION,
               "bars": docs["bars"], "findings": rows,
               "notice": None if preset.claims else smoke, "about": about(preset)}, out / "findings.json")
    report = build_report([out], out / "report.html")
    refresh_joined(out)
    return report


def refresh_joined(out: Path) -> Path | None:
    """Rewrite the findings and report of the demo whose folder holds the study (``OUT/..``), when that demo
    finished (its ``findings.json`` exists); returns its report or None."""
    from mimlens.config import load_yaml
    from mimlens.demo.findings_stage import write_findings_and_report as write_demo
    from mimlens.demo.presets import get_preset

    parent = out.resolve().parent
    if out.name != MASKING_FOLDER or not (parent / "findings.json").is_file() or not (parent / "config.yaml").is_file():
        return None
    marker = load_yaml(parent / "config.yaml").get(st.MARKER) or {}
    try:
        preset = get_preset(str(marker.get("preset")))
    except MimlensError:
        return None
    return None if preset.mask_settings else write_demo(parent, preset)

