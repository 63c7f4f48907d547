"""Report sections for each kind of run directory, recognised by the files it holds.

kinds: ``comparison`` (``cka_across.json`` / ``compare.json``), ``analysis`` (``attention.json``),
``probe`` (``probe.json``), ``over_training`` (``attention_over_training.json``: every checkpoint of a
run analysed; both rendered by :mod:`mimlens.report.probe_runs`), ``masks`` (``avgdist.json``),
``training`` (``log.jsonl`` or ``metrics.json``: pre-training and fine-tuning runs) and ``findings``
(``findings.json``, e.g. a demo directory, rendered by :mod:`mimlens.report.findings`). A directory with
none of these may still hold runs in its sub-directories (a demo); they are found up to three levels down.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mimlens.errors import MimlensError
from mimlens.report import explanations as ex
from mimlens.report.blocks import (
    Section,
    esc,
    explain,
    facts,
    figure,
    json_table,
    notice,
    plural,
    table,
)
from mimlens.report.summary import LAYER_COLUMNS, attention_layer_rows

MARKERS = {
    "comparison": ("cka_across.json", "compare.json"),
    "analysis": ("attention.json",),
    "probe": ("probe.json",),
    "over_training": ("attention_over_training.json",),
    "masks": ("avgdist.json",),
    "training": ("log.jsonl", "metrics.json"),
    "findings": ("findings.json",),
}
NOT_RUNS = {"figures", "checkpoints", "tensorboard", "attention", "stages", "__pycache__"}  # stages: a demo's records
GROUPS = ("Pre-training", "Analysis", "Over training", "Comparison", "Probe", "Masking", "Fine-tuning",
          "Training run")  # title prefixes
DATA_SUFFIXES = (".json", ".csv", ".yaml", ".jsonl")


@dataclass(frozen=True)
class Run:
    """A run directory, the top-level directory it was found under and the name its copies go under;
    ``named``: the report shows several top-level directories, so titles start with the directory's name."""

    path: Path
    kind: str
    root: Path
    root_label: str
    named: bool = True

    @property
    def title(self) -> str:
        """The run's path inside its top-level directory (the directory's name for the directory itself)."""
        rel = self.path.relative_to(self.root)
        if rel == Path("."):
            return self.root.name
        return f"{self.root.name}/{rel.as_posix()}" if self.named else rel.as_posix()

    def show(self, value: Any) -> Any:
        """``value`` (a string, or strings nested in lists and mappings) with paths inside the top-level
        directory written as the report titles runs: relative to it, or starting with its name."""
        if isinstance(value, Mapping):
            return {k: self.show(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.show(v) for v in value]
        if not isinstance(value, str):
            return value
        root = str(self.root)
        if value == root:
            return self.root.name
        return value.replace(f"{root}/", f"{self.root.name}/" if self.named else "")


def run_kind(path: Path) -> str | None:
    for kind, names in MARKERS.items():
        if any((path / n).is_file() for n in names):
            return kind
    return None


def discover(root: Path, root_label: str, skip: Path | None = None, depth: int = 3, named: bool = True) -> list[Run]:
    """The runs at ``root`` and below it, parents before children, siblings in name order; ``skip`` (the
    report's own directory, which holds copies of runs) is not searched, nor a demo directory inside another
    (e.g. ``OUT/masking``, the masking study, which has its own report); ``named`` as in :class:`Run`."""
    root = root.resolve()
    found = []

    def visit(path: Path, level: int, in_demo: bool) -> None:
        kind = run_kind(path)
        if kind == "findings" and in_demo:
            return
        if kind:
            found.append(Run(path, kind, root, root_label, named))
        if level < depth:
            for sub in sorted(p for p in path.iterdir() if p.is_dir()):
                if sub.name not in NOT_RUNS and not sub.name.startswith(".") and sub.resolve() != skip:
                    visit(sub, level + 1, in_demo or kind == "findings")

    visit(root, 0, False)
    return found


class Assets:
    """Puts the files a report shows next to it and returns their links relative to the report.

    Files already under the output directory stay where they are; others are copied to
    ``OUT/<root label>/<path inside the run's top-level directory>``.
    """

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir.resolve()
        self.links: list[str] = []
        self.written: dict[Path, list[str]] = {}

    def target(self, run: Run, rel: str) -> Path:
        """Where a file at ``rel`` inside ``run`` lives next to the report."""
        src = run.path / rel
        if src.resolve().is_relative_to(self.out_dir):
            return src.resolve()
        return self.out_dir / run.root_label / run.path.relative_to(run.root) / rel

    def place(self, run: Run, rel: str) -> str:
        src, dest = (run.path / rel).resolve(), self.target(run, rel)
        if dest != src and src.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        return self._link(dest)

    def write(self, run: Run, rel: str, data: bytes) -> str:
        """Write a file the report made for ``run`` (e.g. curves drawn from its log) next to the report."""
        dest = self.target(run, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        self.written.setdefault(run.path, []).append(rel)
        return self._link(dest)

    def has(self, run: Run, rel: str) -> bool:
        """Whether the file at ``rel`` inside ``run`` is already next to the report."""
        return self.target(run, rel).relative_to(self.out_dir).as_posix() in self.links

    def _link(self, dest: Path) -> str:
        link = dest.relative_to(self.out_dir).as_posix()
        if link not in self.links:
            self.links.append(link)
        return link


def run_section(run: Run, assets: Assets) -> Section:
    """The section of one run: its own subsections, then any figure not shown yet, then its files."""
    from mimlens.report.probe_runs import over_training_section, probe_section

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


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MimlensError(f"{path} is not valid JSON: {err}") from None


def _read_config(run: Run) -> dict[str, Any]:
    path = run.path / "config.yaml"
    if not path.is_file():
        return {}
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise MimlensError(f"{path} is not valid YAML: {err}") from None


def run_figure(run: Run, assets: Assets, stem: str) -> str:
    """The figure ``figures/<stem>.png`` of a run, placed next to the report and embedded; "" if absent."""
    rel = f"figures/{stem}.png"
    if not (run.path / rel).is_file():
        return ""
    assets.place(run, rel)
    key = next((k for k in ex.FIGURES if stem == k or stem.startswith(f"{k}_") or stem.endswith(f"_{k}")), stem)
    title, caption = ex.FIGURES.get(key, (stem.replace("_", " ").capitalize(), ""))
    if stem.startswith("cka_across_"):
        title = f"{title}: {stem.removeprefix('cka_across_').replace('_vs_', ' vs ')}"
    return figure(run.path / rel, caption, title)


def files_section(run: Run, assets: Assets) -> Section | None:
    rels = sorted(p.relative_to(run.path).as_posix() for p in [*run.path.iterdir(), *run.path.glob("attention/*")]
                  if p.is_file() and p.suffix in DATA_SUFFIXES)
    figures = {f"figures/{p.name}" for p in (run.path / "figures").glob("*.png")}
    rels += sorted(figures.union(assets.written.get(run.path, [])))
    if not rels:
        return None
    links = "".join(f'<li><a href="{esc(assets.place(run, r))}">{esc(r)}</a></li>' for r in rels)
    return Section("Files", '<p>The numbers and figures of this run, next to this report:</p>'
                            f'<ul class="files">{links}</ul>')


def _weights_notice(weights: str | None) -> str:
    if weights and "random" in weights:
        return notice("The weights are a random initialisation: these statistics describe an untrained "
                      "model and serve as the reference a trained model is read against.")
    return ""


def _loading_facts(loading: Mapping[str, Any]) -> dict[str, Any]:
    """What loading did (an ``attention.json``'s ``loading``): the format, the key counts, the mean and std."""
    counts = loading.get("counts")
    triple = ", ".join(f"{k} {counts[k]}" for k in ("dropped", "missing", "resized")) if counts else None
    stats = [", ".join(f"{v:.3g}" for v in loading.get(k) or []) for k in ("mean", "std")]
    return {"weights format": loading.get("format_description") or loading.get("format"), "keys": triple,
            "mean, std": f"({stats[0]}), ({stats[1]}): {loading.get('normalisation')}" if loading else None}


def _analysis(run: Run, assets: Assets) -> Section:
    doc = read_json(run.path / "attention.json")
    model = run.show(doc.get("model", run.title))
    section = Section(f"Analysis: {model}")
    section.body = facts({
        "run": run.title, "model": model, "weights": run.show(doc.get("weights")),
        "data": run.show(doc.get("data")), "images": doc.get("num_images"), "image size": doc.get("image_size"),
        "prefix tokens as keys": doc.get("prefix_policy"), "dtype": doc.get("dtype"),
        "layers": len(doc.get("layers", [])), **_loading_facts(doc.get("loading") or {}),
    }) + _weights_notice(doc.get("weights"))
    for stem, title in (("attention_distance", "Attention distance (F1)"),
                        ("attention_entropy", "Attention entropy (F3)"), ("head_kl", "Head diversity (F3)")):
        fig = run_figure(run, assets, stem)
        if fig:
            section.children.append(Section(title, fig + explain(ex.READING[stem])))
    section.children.append(Section("Per-layer numbers", table(
        LAYER_COLUMNS, attention_layer_rows(doc),
        "Means over the heads of each layer; 'uniform' is uniform attention over the same keys."
    )))
    if (run.path / "cka.json").is_file():
        section.children.append(_cka_within(run, assets))
    return section


def _cka_within(run: Run, assets: Assets) -> Section:
    doc = read_json(run.path / "cka.json")
    matrix = doc.get("matrix") or []
    n = len(matrix)
    off = [matrix[i][j] for i in range(n) for j in range(n) if i != j and matrix[i][j] is not None]  # null: NaN
    stats = facts({
        "estimator": doc.get("estimator"), "sample unit": doc.get("unit"), "images": doc.get("num_images"),
        "mean CKA between different layers": sum(off) / len(off) if off else None,
        "CKA(first block, last block)": matrix[0][-1] if n > 1 else None,
    })
    return Section("CKA between layers (F5)", run_figure(run, assets, "cka_within") + stats
                   + explain(ex.READING["cka_within"]))


def _comparison(run: Run, assets: Assets) -> Section:
    meta = read_json(run.path / "compare.json") if (run.path / "compare.json").is_file() else {}
    models = meta.get("models", [])
    section = Section(f"Comparison: {' vs '.join(m.get('label', '?') for m in models) or run.title}")
    section.body = facts({"run": run.title, "data": meta.get("data"), "images": meta.get("num_images")})
    if models:
        section.body += table(["label", "model", "weights", "attention from"],
                              [[m.get("label"), *run.show([m.get("model"), m.get("weights"), m.get("attention_from")])]
                               for m in models])
    if any("random" in str(m.get("weights")) for m in models):
        section.body += _weights_notice("random")
    for stem, title in (("attention_distance", "Attention distance (F1)"),
                        ("attention_entropy", "Attention entropy (F3)"), ("head_kl", "Head diversity (F3)")):
        fig = run_figure(run, assets, stem)
        if fig:
            section.children.append(Section(title, fig + explain(ex.READING[stem])))
    per_model = _per_model_tables(run, models)
    if per_model:
        section.children.append(Section("Per-layer numbers", per_model))
    if (run.path / "cka_across.json").is_file():
        section.children.append(_cka_across(run, assets))
    return section


def _per_model_tables(run: Run, models: list[dict[str, Any]]) -> str:
    parts = []
    for m in models:
        path = run.path / str(m.get("attention", ""))
        if path.is_file():
            doc = read_json(path)
            caption = f"{m.get('label')}: {run.show(doc.get('model'))}"
            parts.append(table(LAYER_COLUMNS, attention_layer_rows(doc), caption))
    return "".join(parts)


def _cka_across(run: Run, assets: Assets) -> Section:
    doc = read_json(run.path / "cka_across.json")
    rows = []
    for pair in doc.get("pairs", [doc]):
        matrix = pair.get("matrix") or [[]]
        diag = [matrix[i][i] for i in range(min(len(matrix), len(matrix[0]))) if matrix[i][i] is not None]
        rows.append([pair.get("model_a"), pair.get("model_b"), pair.get("unit"), pair.get("num_images"),
                     sum(diag) / len(diag) if diag else None, matrix[-1][-1] if matrix[0] else None])
    estimators = sorted({str(p.get("estimator")) for p in doc.get("pairs", [doc])})
    figures = "".join(run_figure(run, assets, p.stem) for p in sorted((run.path / "figures").glob("cka_across*.png")))
    body = figures + table(["model A", "model B", "unit", "images", "mean diagonal CKA", "CKA(last, last)"], rows,
                           "Estimator: " + "; ".join(estimators))
    return Section("CKA between models (F5)", body + explain(ex.READING["cka_across"]))


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
