"""Several models side by side: every selected analysis of :mod:`mimlens.analysis.registry` on the same raw
images in the same order, each model with its own preprocessing.

An analysis that compares two models (``between``) runs on every pair, in the order given; any other runs on
each model, unless the item is an analysis run directory that already holds its ``<name>.json`` (reused: the
model is loaded again from the run's ``config.yaml``, a random initialisation from its recorded seed, so a pair
measures the very weights the analysis did).

Writes ``config.yaml`` (with ``resolved.loading``: what loading did, per label), ``compare.json`` (the models, what
loading each did, the analyses and where each model's documents came from), ``<name>/<label>.json`` per model,
``<name>_across.json`` (``{"pairs": [...]}``) per pair analysis and their figures (the command adds
``report.html``).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from typing import Any

from mimlens.errors import MimlensError

__all__ = ["analysis_run", "archs_for", "compare", "labels_for"]


def archs_for(items: list[str], archs: list[str] | None) -> list[str | None]:
    """The ``--arch`` of each item: one value applies to every checkpoint file, N values map to N items."""
    if not archs:
        return [None] * len(items)
    if len(archs) == 1:
        return [archs[0] if Path(item).is_file() else None for item in items]
    if len(archs) != len(items):
        raise MimlensError(f"--arch given {len(archs)} times for {len(items)} items: expected once or once per item")
    return [None if a in ("-", "") else a for a in archs]


def labels_for(items: list[str]) -> list[str]:
    """Short unique labels: the item's name (a checkpoint of a run: the run's, see
    :func:`mimlens.model_names.model_label`), numbered on collisions."""
    from mimlens.model_names import model_label

    labels: list[str] = []
    for item in items:
        label = base = model_label(item)
        n = 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.append(label)
    return labels


def analysis_run(item: str) -> dict[str, Any] | None:
    """The ``model`` section of an analysis run directory's ``config.yaml`` (None when ``item`` is not one)."""
    from mimlens.config import load_yaml

    path = Path(item)
    if not any((path / name).is_file() for name in ("analysis.json", "attention.json")):
        return None
    model = load_yaml(path / "config.yaml").get("model") if (path / "config.yaml").is_file() else None
    if not isinstance(model, dict) or not model.get("spec"):
        raise MimlensError(f"analysis run {path} has no config.yaml with model.spec: cannot load its model again")
    return model


def _reused(run: str, name: str) -> dict[str, Any] | None:
    """The document ``<name>.json`` of an analysis run, None when it has none."""
    from mimlens.io import read_json

    path = Path(run) / f"{name}.json"
    return read_json(path) if path.is_file() else None


def compare(cfg: dict[str, Any], out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the comparison ``cfg`` describes (``items``, ``arch``, ``seed``, ``pretrained``, ``encoder``, ``data``,
    ``analysis`` with ``names``, ``run``) and write the run directory ``out`` (rank 0); returns ``compare.json``."""
    from mimlens import distributed
    from mimlens.analysis.registry import MeasureContext, selected
    from mimlens.analysis.run import image_dataset, model_meta, progress_enabled, skipped_files
    from mimlens.data.folders import skipped_message
    from mimlens.models import preprocessing

    items = [str(i) for i in cfg["items"]]
    if len(items) < 2:
        raise MimlensError(f"compare needs at least two runs or models, got {len(items)}")
    analyses = selected(cfg["analysis"]["names"])
    device = distributed.init(cfg["run"]["device"])
    main = distributed.is_main()
    entries = _entries(items, cfg)
    sizes = [preprocessing(e["model"])["img_size"] for e in entries]
    dataset = image_dataset(cfg["data"], max(max(s) if isinstance(s, tuple) else s for s in sizes))
    for e in entries:
        e["meta"] = model_meta(e["spec"], e["model"], e["info"], dataset, cfg["data"]["source"])
    if main:
        _say_loading(entries, dataset, cfg["data"]["source"], log)
    for e in entries:
        e["ctx"] = MeasureContext(e["model"], dataset, cfg["analysis"], device, progress_enabled(cfg) and main,
                                  e["label"])
    per_model = [a for a in analyses if a.between is None]
    _per_model(entries, per_model, dataset, cfg["data"]["source"])
    pairs = {a.name: [a.function("between")(x["ctx"], y["model"], y["label"]).to_json()
                      for x, y in combinations(entries, 2)] for a in analyses if a.between is not None}
    meta = {
        "data": cfg["data"]["source"], "num_images": len(dataset), "skipped_files": skipped_files(dataset),
        "analyses": [a.name for a in analyses],
        "models": [{"label": e["label"], "model": e["spec"], "weights": e["meta"]["weights"],
                    "loading": e["meta"]["loading"], **{f"{a.name}_from": e["from"][a.name] for a in per_model},
                    **{a.name: f"{a.name}/{e['label']}.json" for a in per_model}} for e in entries],
    }
    skipped = skipped_message(dataset)  # a collective
    if main:
        _write(out, cfg, entries, per_model, pairs, meta)
        _say_summary(out, entries, analyses, pairs, skipped, log)
    distributed.barrier()
    return meta


def _entries(items: list[str], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Each item loaded: its label, MODEL spelling, model, loading info and the directory of an analysis run."""
    from mimlens.models.describe import load

    entries = []
    for item, arch, label in zip(items, archs_for(items, cfg["arch"]), labels_for(items), strict=True):
        section = analysis_run(item)
        run = item if section else None
        section = section or {"spec": item, "arch": arch, "seed": cfg["seed"], "pretrained": cfg["pretrained"],
                              "encoder": cfg["encoder"]}
        model, info = load(section["spec"], section.get("arch"), section.get("seed"),
                           pretrained=section.get("pretrained", False), encoder=section.get("encoder", "base"))
        entries.append({"label": label, "item": item, "run": run, "spec": section["spec"], "model": model,
                        "info": info, "docs": {}, "from": {}})
    return entries


def _per_model(entries: list[dict[str, Any]], analyses: list, dataset, source: str) -> None:
    """Each entry's document of every one-model analysis (``docs``) and where it came from (``from``): measured
    on the comparison's images unless an earlier analysis run holds it."""
    from mimlens.analysis.run import measure_documents

    for e in entries:
        for entry in analyses:
            doc = _reused(e["run"], entry.name) if e["run"] else None
            if doc is None:
                e["docs"].update(measure_documents([entry], e["ctx"], e["meta"]))
                e["from"][entry.name] = f"this comparison ({len(dataset)} images of {source})"
            else:
                e["docs"][entry.name] = doc
                e["from"][entry.name] = (f"analysis run {e['item']} ({doc.get('num_images')} images of "
                                         f"{doc.get('data', '?')})")


def _say_loading(entries: list[dict[str, Any]], dataset, source: str, log: Callable[[str], None]) -> None:
    from mimlens.models.describe import loading_lines

    log(f"compare {', '.join(e['label'] for e in entries)} on {len(dataset)} images of {source}")
    for e in entries:
        log(f"{e['label']} ({e['meta']['weights']}):")
        for line in loading_lines(e["info"], e["meta"]["loading"]):
            log(f"  {line}")


def _write(out: Path, cfg: dict[str, Any], entries: list[dict[str, Any]], per_model: list,
           pairs: dict[str, list[dict[str, Any]]], meta: dict[str, Any]) -> None:
    """config.yaml, compare.json, <name>/<label>.json, <name>_across.json and the figures."""
    from mimlens.analysis.registry import analysis
    from mimlens.config import save_config
    from mimlens.io import save_json

    save_config({**cfg, "resolved": {"loading": {e["label"]: e["meta"]["loading"] for e in entries}}}, out)
    save_json(meta, out / "compare.json")
    labels = [e["label"] for e in entries]
    for entry in per_model:
        for e in entries:
            save_json(e["docs"][entry.name], out / entry.name / f"{e['label']}.json")
        figures = entry.function("figures")
        if figures:
            figures([e["docs"][entry.name] for e in entries], labels, out / "figures", " vs ".join(labels))
    for name, docs in pairs.items():
        save_json({"pairs": docs}, out / f"{name}_across.json")
        figures = analysis(name).function("pair_figures")
        if figures:
            figures(docs, out / "figures")


def _say_summary(out: Path, entries: list[dict[str, Any]], analyses: list, pairs: dict[str, list],
                 skipped: str | None, log: Callable[[str], None]) -> None:
    for entry in analyses:
        summary = entry.function("summary")
        if summary is None:
            continue
        if entry.between is None:
            for e in entries:
                log(f"\n{entry.name} of {e['label']} ({e['meta']['weights']}; from {e['from'][entry.name]})\n"
                    f"{summary(e['docs'][entry.name])}")
        else:
            estimators = sorted({str(d.get('estimator')) for d in pairs[entry.name] if d.get("estimator")})
            log(f"\n{entry.name} between models" + (f" ({'; '.join(estimators)})" if estimators else "") + ":")
            for doc in pairs[entry.name]:
                log(summary(doc))
    if skipped:
        log(skipped)
    if any(e["meta"]["weights"] == "random init" for e in entries):
        log("note: random-init models are untrained references, not pre-trained models")
    made = ", ".join([f"{a.name}/" if a.between is None else f"{a.name}_across.json" for a in analyses])
    log(f"run directory: {out}  (compare.json, {made}, figures/, report.html)")
