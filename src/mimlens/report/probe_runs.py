"""Report sections of the runs that read a model block by block: a layer-wise probe run (``probe.json``,
``mimlens probe``) and an analysis of every checkpoint of a training run (``attention_over_training.json``,
``mimlens analyze RUN --every-checkpoint``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mimlens.errors import MimlensError
from mimlens.io import read_json
from mimlens.report import explanations as ex
from mimlens.report.blocks import Section, explain, facts, notice, plural, table
from mimlens.report.rundirs import Assets, Run, run_figure, weights_notice

ROW_KEYS = ("block", "name", "stage", "lambda", "lambda_factor", "se", "values")  # a probe row's non-metric keys
OVER_TRAINING = (("distance_px", "Mean attention distance (px)"), ("entropy", "Mean attention entropy (nats)"),
                 ("head_kl_mean", "Mean KL between heads"))


def probe_section(run: Run, assets: Assets) -> Section:
    """The by-layer figure, then per task a table: every probed block's metrics, the SE of the primary metric and
    the chosen ridge λ, followed by the task's trivial baselines."""
    doc = _document(run, "probe.json", "tasks")
    model = run.show(doc.get("model", run.title))
    section = Section(f"Probe: {model}")
    section.body = facts({"run": run.title, "model": model, "weights": run.show(doc.get("weights")),
                          "data": run.show(doc.get("data")), "image size (px)": doc.get("img_size"),
                          "seed": doc.get("seed"), "blocks": len(doc.get("blocks") or [])})
    section.body += weights_notice(doc.get("weights"))
    section.body += run_figure(run, assets, "probe_by_layer") + explain(ex.READING["probe"])
    for name, task in doc["tasks"].items():
        if isinstance(task, Mapping):
            note = notice(f"Note: {task['note']}") if task.get("note") else ""
            section.children.append(Section(f"{name}: {task.get('primary')} by block", _probe_table(task) + note))
    return section


def _probe_table(task: Mapping[str, Any]) -> str:
    rows = [r for r in task.get("rows") or [] if isinstance(r, Mapping)]
    primary = task.get("primary")
    metrics = list(dict.fromkeys([primary, *(k for r in rows for k, v in r.items() if k not in ROW_KEYS
                                             and isinstance(v, (int, float)) and not isinstance(v, bool))]))
    body = [[r.get("block"), r.get("name"), *(r.get(m) for m in metrics), r.get("se"), r.get("lambda")]
            for r in rows]
    for base, values in (task.get("baselines") or {}).items():
        body.append([None, f"baseline: {base}", *(values.get(m) for m in metrics), values.get("se"), None])
    better = "higher" if task.get("higher_is_better") else "lower"
    counts = [plural(task[k], f"{w} image") for k, w in (("num_train_images", "training"),
                                                          ("num_eval_images", "evaluation")) if k in task]
    caption = f"{primary}: {better} is better; SE of {primary}; " + ", ".join(counts)
    return table(["block", "name", *metrics, "SE", "λ"], body, caption.rstrip("; "))


def over_training_section(run: Run, assets: Assets) -> Section:
    """The statistics-against-step figure and, per statistic, a table of layers (rows) by training step."""
    doc = _document(run, "attention_over_training.json", "steps")
    steps = list(doc["steps"])
    trained = Path(str(doc.get("run") or run.path)).name
    section = Section(f"Over training: {trained}")
    section.body = facts({"run": run.title, "training run": run.show(doc.get("run")), "model": doc.get("model"),
                          "data": run.show(doc.get("data")), "images": doc.get("num_images"),
                          "prefix tokens as keys": doc.get("prefix_policy"),
                          "steps": ", ".join(str(s) for s in steps)})
    section.body += run_figure(run, assets, "attention_over_training") + explain(ex.READING["attention_over_training"])
    layers = list(doc.get("layers") or [])
    for key, title in OVER_TRAINING:
        values = doc.get(key) or []
        rows = [[layer, *(row[i] if i < len(row) else None for row in values)] for i, layer in enumerate(layers)]
        section.children.append(Section(title, table(["layer", *(f"step {s}" for s in steps)], rows,
                                                     f"{title}: mean over the heads of each layer")))
    return section


def _document(run: Run, name: str, key: str) -> dict[str, Any]:
    doc = read_json(run.path / name)
    if not isinstance(doc, dict) or not isinstance(doc.get(key), (dict, list)):
        raise MimlensError(f"{run.path / name}: expected a JSON object with '{key}'")
    return doc
