"""Report sections for each kind of run directory (:data:`mimlens.report.rundirs.MARKERS`).

kinds: ``comparison`` (``cka_across.json`` / ``compare.json``), ``analysis`` (``attention.json``),
``probe`` (``probe.json``), ``over_training`` (``attention_over_training.json``: every checkpoint of a
run analysed; both rendered by :mod:`mimlens.report.probe_runs`), ``masks`` (``avgdist.json``),
``training`` (``log.jsonl`` or ``metrics.json``: pre-training and fine-tuning runs) and ``findings``
(``findings.json``, e.g. a demo directory, rendered by :mod:`mimlens.report.findings_page`). A directory with
none of these may still hold runs in its sub-directories (a demo); they are found up to three levels down.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import yaml

from mimlens.errors import MimlensError
from mimlens.io import read_json
from mimlens.report import explanations as ex
from mimlens.report.blocks import (
    Section,
    explain,
    facts,
    figure,
    json_table,
    plural,
    table,
)
from mimlens.report.probe_runs import over_training_section, probe_section
from mimlens.report.rundirs import Assets, Run, files_section, run_figure, weights_notice

GROUPS = ("Pre-training", "Analysis", "Over training", "Comparison", "Probe", "Masking", "Fine-tuning",
          "Training run")  # title prefixes


def run_section(run: Run, assets: Assets) -> Section:
    """The section of one run: its own subsections, then any figure not shown yet, then its files."""
    builders = {"comparison": _comparison, "analysis": _analysis, "probe": probe_section,
                "over_training": over_training_section, "masks": _masks, "training": _training}
    section = builders[run.kind](run, assets)
    leftover = [p.stem for p in sorted((run.path / "figures").glob("*.png"))
                if not assets.has(run, f"figures/{p.name}")]
    if leftover:
        section.children.append(Section("Other figures", "".join(run_figure(run, assets, s) for s in leftover)))
    files = files_section(run, assets)
    if files:
        section.children.append(files)
    return section


def group_runs(sections: list[Section]) -> list[Section]:
    """Run sections grouped by kind (the prefix of their titles, in ``GROUPS`` order), each run folded."""
    groups: dict[str, list[Section]] = {}
    for section in sections:
        section.folded = True
        groups.setdefault(section.title.split(":", 1)[0], []).append(section)
    order = sorted(groups, key=lambda g: GROUPS.index(g) if g in GROUPS else len(GROUPS))
    return [Section(f"{g} ({plural(len(groups[g]), 'run')})", "", groups[g]) for g in order]


def _read_config(run: Run) -> dict[str, Any]:
    path = run.path / "config.yaml"
    if not path.is_file():
        return {}
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise MimlensError(f"{path} is not valid YAML: {err}") from None


def _loading_facts(loading: Mapping[str, Any]) -> dict[str, Any]:
    """What loading did (an ``attention.json``'s ``loading``): the format, the key counts, the mean and std."""
    counts = loading.get("counts")
    triple = ", ".join(f"{k} {counts[k]}" for k in ("dropped", "missing", "resized")) if counts else None
    stats = [", ".join(f"{v:.3g}" for v in loading.get(k) or []) for k in ("mean", "std")]
    return {"weights format": loading.get("format_description") or loading.get("format"), "keys": triple,
            "mean, std": f"({stats[0]}), ({stats[1]}): {loading.get('normalisation')}" if loading else None}


def _analysis(run: Run, assets: Assets) -> Section:
    """One model's analyses: what was analysed, then each registered analysis whose ``<name>.json`` is here."""
    from mimlens.analysis.registry import ANALYSES

    record = "analysis.json" if (run.path / "analysis.json").is_file() else "attention.json"
    doc = read_json(run.path / record)
    model = run.show(doc.get("model", run.title))
    section = Section(f"Analysis: {model}")
    attention = read_json(run.path / "attention.json") if (run.path / "attention.json").is_file() else {}
    section.body = facts({
        "run": run.title, "model": model, "weights": run.show(doc.get("weights")),
        "data": run.show(doc.get("data")), "images": doc.get("num_images"), "image size": attention.get("image_size"),
        "prefix tokens as keys": attention.get("prefix_policy"), "dtype": attention.get("dtype"),
        "layers": len(attention.get("layers", [])) or None, **_loading_facts(doc.get("loading") or {}),
    }) + weights_notice(doc.get("weights"))
    for entry in ANALYSES.values():
        path = run.path / entry.json_name
        if path.is_file():
            section.children += entry.function("section")(run, assets, [read_json(path)], [run.path.name])
    return section


def _comparison(run: Run, assets: Assets) -> Section:
    """Several models: the models table, then each analysis of every model, then each analysis of the pairs."""
    from mimlens.analysis.registry import ANALYSES

    meta = read_json(run.path / "compare.json") if (run.path / "compare.json").is_file() else {}
    models = meta.get("models", [])
    section = Section(f"Comparison: {' vs '.join(m.get('label', '?') for m in models) or run.title}")
    section.body = facts({"run": run.title, "data": meta.get("data"), "images": meta.get("num_images")})
    if models:
        section.body += table(["label", "model", "weights", "attention from"],
                              [[m.get("label"), *run.show([m.get("model"), m.get("weights"), m.get("attention_from")])]
                               for m in models])
    if any("random" in str(m.get("weights")) for m in models):
        section.body += weights_notice("random")
    for entry in ANALYSES.values():
        paths = [run.path / entry.name / f"{m.get('label')}.json" for m in models]
        if paths and all(p.is_file() for p in paths):
            section.children += entry.function("section")(run, assets, [read_json(p) for p in paths],
                                                          [m.get("label") for m in models])
        across = run.path / f"{entry.name}_across.json"
        if across.is_file() and entry.pair_section is not None:
            doc = read_json(across)
            section.children += entry.function("pair_section")(run, assets, doc.get("pairs", [doc]))
    return section


def _masks(run: Run, assets: Assets) -> Section:
    doc = read_json(run.path / "avgdist.json")
    if not isinstance(doc, dict):
        raise MimlensError(f"{run.path / 'avgdist.json'}: expected a JSON object with 'settings'")
    band = doc.get("moderate_band_px")
    body = facts({"run": run.title, "image size (px)": doc.get("img_size"), "masks per setting": doc.get("num_masks"),
                  "moderate band (px)": " to ".join(f"{v:.3g}" for v in band) if band else None,
                  "convention": doc.get("convention")})
    body += run_figure(run, assets, "avgdist") + json_table(doc.get("settings", []), "AvgDist per masking setting")
    body += explain(ex.READING["avgdist"]) + run_figure(run, assets, "mask_examples")
    return Section(f"Masking: AvgDist ({run.title})", body)


def _training(run: Run, assets: Assets) -> Section:
    """A pre-training run (config ``objective``) or a fine-tuning run (``task``): curves, metrics, sweeps."""
    cfg = _read_config(run)
    metrics = read_json(run.path / "metrics.json") if (run.path / "metrics.json").is_file() else {}
    if not isinstance(metrics, dict):
        raise MimlensError(f"{run.path / 'metrics.json'}: expected a JSON object")
    if "objective" in cfg:
        title = f"Pre-training: {run.title} ({cfg['objective']})"
    elif "task" in cfg or "task" in metrics:
        title = f"Fine-tuning: {run.title} ({cfg.get('task', metrics.get('task'))})"
    else:
        title = f"Training run: {run.title}"
    model = cfg.get("model")
    section = Section(title, facts({
        "run": run.title, "model": model.get("name") if isinstance(model, dict) else metrics.get("model"),
        "initialised from": run.show(metrics.get("init")), "last blocks dropped": metrics.get("drop_last"),
        "data": (cfg.get("data") or {}).get("source") if isinstance(cfg.get("data"), dict) else None,
    }))
    if (run.path / "log.jsonl").is_file():
        section.children.append(Section("Training curves", _curves(run, assets) + explain(ex.READING["training"])))
    shown = [p.stem for p in sorted((run.path / "figures").glob("*reconstruction*.png"))]
    if shown:
        section.children.append(Section("Reconstruction", "".join(run_figure(run, assets, s) for s in shown)))
    if metrics:
        body = _metrics(run.show(metrics)) + explain(ex.READING["metrics"])
        section.children.append(Section("Metrics (F4, F6)", body))
    if (run.path / "drop_sweep.json").is_file():
        sweep = read_json(run.path / "drop_sweep.json")
        body = run_figure(run, assets, "layer_drop")
        body += json_table(sweep.get("rows", []), f"metric: {sweep.get('metric')}")
        section.children.append(Section("Dropping the last blocks (F4)", body + explain(ex.READING["layer_drop"])))
    return section


def _metrics(metrics: dict[str, Any]) -> str:
    """The primary metric, every metric, and the metric variant that produced them."""
    primary = metrics.get("primary") or {}
    head = facts({"task": metrics.get("task"), "primary metric": primary.get("name"), "value": primary.get("value"),
                  "standard error": primary.get("se"), "evaluation items": primary.get("n"),
                  "higher is better": primary.get("higher_is_better"), **_trained_facts(metrics)})
    values = metrics.get("metrics")
    body = json_table(values, "metrics") if isinstance(values, dict) else json_table(
        {k: v for k, v in metrics.items() if k not in ("variant", "primary")}, "metrics.json")
    variant = metrics.get("variant")
    if isinstance(variant, dict):
        body += json_table(variant, "metric variant")
    elif variant:
        body += facts({"metric variant": variant})
    if isinstance(metrics.get("train"), dict):
        body += json_table(metrics["train"], "training")
    return head + body


def _trained_facts(metrics: dict[str, Any]) -> dict[str, Any]:
    """The best trivial baseline with its value, and whether the run beats it (``trained`` in metrics.json)."""
    test, baselines, name = metrics.get("trained_test"), metrics.get("baselines"), (metrics.get("primary") or {})
    if not isinstance(test, dict) or not isinstance(baselines, dict) or "trained" not in metrics:
        return {}
    best = test.get("baseline")
    value = (baselines.get(best) or {}).get(name.get("name"))
    shown = f"{best}: {value:.4g}" if isinstance(value, (int, float)) else best
    return {"best trivial baseline": shown, "trained": "yes" if metrics["trained"] else "no",
            "trained means": test.get("rule")}


def _curves(run: Run, assets: Assets) -> str:
    """The run's own loss figure when it has one, else curves drawn from ``log.jsonl``."""
    own = sorted(p.stem for p in (run.path / "figures").glob("*.png") if "loss" in p.stem or "curve" in p.stem)
    if own:
        return "".join(run_figure(run, assets, s) for s in own)
    from mimlens.report.figures_training import read_log, training_curves

    fig = training_curves(read_log(run.path / "log.jsonl"), title=run.title)
    if fig is None:
        return "<p>log.jsonl holds no plottable step records yet.</p>"
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    assets.write(run, "figures/training_curves.png", buf.getvalue())
    title, caption = ex.FIGURES["training_curves"]
    return figure(buf.getvalue(), caption, title)
