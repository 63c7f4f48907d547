"""``mimlens compare RUN_OR_MODEL RUN_OR_MODEL ...``: several models side by side, and CKA between them.

Each item is an analysis run directory (its ``attention.json`` is reused; its model is loaded again from
its ``config.yaml`` for CKA, a random initialisation from its recorded seed, so CKA measures the very weights the
analysis did) or a MODEL spelling (analysed here; random initialisations from ``seed``, default 0; with
``pretrained`` timm's pretrained weights, with ``encoder`` MoCo v3's base or momentum encoder). Every pair of
models gets a CKA matrix on the same raw images in the same order, each model with its own preprocessing.

Writes: ``config.yaml`` (with ``resolved.loading``: what loading did, per label), ``compare.json`` (the models,
what loading each did and where their statistics came from),
``attention/<label>.json``, ``cka_across.json`` (``{"pairs": [cka.json, ...]}``), overlaid
``figures/attention_distance.png`` (pixels, or fractions of the image side when the models' input sizes
differ), ``attention_entropy.png``, ``head_kl.png``, the CKA heat map
``figures/cka_across.png`` (two models) or ``figures/cka_across_<a>_vs_<b>.png`` (each pair), and
``report.html``.
"""

from __future__ import annotations

import argparse
from itertools import combinations
from pathlib import Path
from typing import Any

from mimlens.commands.analyze import add_data_arguments, add_loading_arguments, data_flags
from mimlens.probe.analysis import DATA_DEFAULTS

DEFAULTS: dict[str, Any] = {
    "items": [],
    "arch": [],
    "seed": 0,
    "pretrained": False,
    "encoder": "base",
    "data": DATA_DEFAULTS,
    "analysis": {"batch_size": 64, "prefix_policy": "renorm", "cka_unit": "image"},
    "run": {"device": None, "out": None, "progress": True},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("items", nargs="+", metavar="RUN_OR_MODEL",
                        help="analysis run directories or MODEL spellings (as for mimlens analyze); two or more")
    parser.add_argument("--arch", action="append",
                        help="for checkpoint files: once for all of them, or once per item in order ('-' for none)")
    add_loading_arguments(parser)
    parser.add_argument("--seed", type=int, help="seed of the random initialisations analysed here (default 0)")
    add_data_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from mimlens.config import resolve
    from mimlens.data.spec import parse_data_spec
    from mimlens.model_names import check_model_spelling
    from mimlens.probe.analysis import check_config, check_loading, slug
    from mimlens.rundir import check_out

    cfg = resolve(DEFAULTS, args.config, {"items": args.items, "arch": args.arch, "seed": args.seed,
                                          "pretrained": args.pretrained, "encoder": args.encoder,
                                          **data_flags(args)})
    # checked before torch is imported: a typo costs no start-up time
    parse_data_spec(cfg["data"]["source"])
    check_loading(cfg["pretrained"], cfg["encoder"])
    check_config(cfg)
    for item in cfg["items"]:
        check_model_spelling(item)
    out = Path(cfg["run"]["out"] or Path("runs") / ("compare_" + "_".join(slug(i) for i in cfg["items"])))
    cfg["run"]["out"] = str(out)
    check_out(out, "compare")
    from mimlens import distributed

    try:
        compare(cfg, out)
    finally:
        distributed.shutdown()
    return 0


def archs_for(items: list[str], archs: list[str] | None) -> list[str | None]:
    """The ``--arch`` of each item: one value applies to every checkpoint file, N values map to N items."""
    from mimlens.errors import MimlensError

    if not archs:
        return [None] * len(items)
    if len(archs) == 1:
        return [archs[0] if Path(item).is_file() else None for item in items]
    if len(archs) != len(items):
        raise MimlensError(f"--arch given {len(archs)} times for {len(items)} items: expected once or once per item")
    return [None if a in ("-", "") else a for a in archs]


def labels_for(items: list[str]) -> list[str]:
    """Short unique labels: the item's name (a checkpoint of a run: the run's, see
    :func:`mimlens.probe.analysis.model_label`), numbered on collisions."""
    from mimlens.probe.analysis import model_label

    labels: list[str] = []
    for item in items:
        label = base = model_label(item)
        n = 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.append(label)
    return labels


def analysis_run(item: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(attention.json, model section of config.yaml)`` when ``item`` is an analysis run directory."""
    import json

    from mimlens.config import load_yaml
    from mimlens.errors import MimlensError

    path = Path(item)
    if not (path / "attention.json").is_file():
        return None
    model = load_yaml(path / "config.yaml").get("model") if (path / "config.yaml").is_file() else None
    if not isinstance(model, dict) or not model.get("spec"):
        raise MimlensError(f"analysis run {path} has no config.yaml with model.spec: cannot load its model for CKA")
    try:
        return json.loads((path / "attention.json").read_text()), model
    except json.JSONDecodeError as err:
        raise MimlensError(f"{path / 'attention.json'} is not valid JSON: {err}") from None


def compare(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run the comparison ``cfg`` describes and write the run directory ``out`` (rank 0)."""
    from mimlens import distributed
    from mimlens.errors import MimlensError
    from mimlens.models import preprocessing
    from mimlens.probe.analysis import cka_pass, image_dataset, progress_enabled, skipped_files

    items = [str(i) for i in cfg["items"]]
    if len(items) < 2:
        raise MimlensError(f"compare needs at least two runs or models, got {len(items)}")
    device = distributed.init(cfg["run"]["device"])
    main = distributed.is_main()
    progress = progress_enabled(cfg) and main
    data = cfg["data"]
    entries = _entries(items, cfg)
    sizes = [preprocessing(e["model"])["img_size"] for e in entries]
    dataset = image_dataset(data, max(max(s) if isinstance(s, tuple) else s for s in sizes))
    if main:
        _say_loading(entries, dataset, data["source"])
    _attention(entries, dataset, cfg, device, progress)
    pairs = []
    for a, b in combinations(entries, 2):
        result = cka_pass(a["model"], dataset, cfg["analysis"], device, progress, model_b=b["model"])
        result.model_a, result.model_b = a["label"], b["label"]
        pairs.append(result)
    meta = {
        "data": data["source"], "num_images": len(dataset), "skipped_files": skipped_files(dataset),
        "models": [{"label": e["label"], "model": e["spec"], "weights": e["weights"], "loading": e["loading"],
                    "attention_from": e["from"], "attention": f"attention/{e['label']}.json"} for e in entries],
    }
    if main:
        _write(out, cfg, entries, pairs, meta)
        _say_summary(out, entries, pairs, dataset)
    distributed.barrier()
    return meta


def _entries(items: list[str], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Each item loaded: its label, MODEL spelling, model, loading record, and an earlier analysis's
    ``attention.json`` when the item is an analysis run (reused instead of a new attention pass)."""
    from mimlens.probe.analysis import describe_weights, load, loading_record

    entries = []
    for item, arch, label in zip(items, archs_for(items, cfg["arch"]), labels_for(items), strict=True):
        reused = analysis_run(item)
        section = reused[1] if reused else {"spec": item, "arch": arch, "seed": cfg["seed"],
                                            "pretrained": cfg["pretrained"], "encoder": cfg["encoder"]}
        model, info = load(section["spec"], section.get("arch"), section.get("seed"),
                           pretrained=section.get("pretrained", False), encoder=section.get("encoder", "base"))
        entries.append({"label": label, "item": item, "spec": section["spec"], "model": model, "info": info,
                        "weights": describe_weights(info), "loading": loading_record(info, model),
                        "doc": reused[0] if reused else None})
    return entries


def _say_loading(entries: list[dict[str, Any]], dataset, source: str) -> None:
    from mimlens.commands.analyze import say
    from mimlens.probe.analysis import loading_lines

    say(f"compare {', '.join(e['label'] for e in entries)} on {len(dataset)} images of {source}")
    for e in entries:
        say(f"{e['label']} ({e['weights']}):")
        for line in loading_lines(e["info"], e["loading"]):
            say(f"  {line}")


def _attention(entries: list[dict[str, Any]], dataset, cfg: dict[str, Any], device, progress: bool) -> None:
    """Each entry's attention document (``doc``) and where it came from (``from``): an attention pass on the
    comparison's images, unless an earlier analysis run gave it."""
    from mimlens.probe.analysis import attention_document, attention_pass

    source = cfg["data"]["source"]
    for e in entries:
        if e["doc"] is None:
            stats = attention_pass(e["model"], dataset, cfg["analysis"], device, progress)
            e["doc"] = attention_document(stats, e["spec"], e["model"], e["info"], dataset, source)
            e["from"] = f"this comparison ({e['doc']['num_images']} images of {source})"
        else:
            e["from"] = (f"analysis run {e['item']} ({e['doc'].get('num_images')} images of "
                         f"{e['doc'].get('data', '?')})")


def _write(out: Path, cfg: dict[str, Any], entries: list[dict[str, Any]], pairs: list, meta: dict[str, Any]) -> None:
    """config.yaml, compare.json, attention/<label>.json, cka_across.json, the figures and report.html."""
    from mimlens.config import save_config
    from mimlens.io import save_json
    from mimlens.report.figures_attention import save_attention_figures
    from mimlens.report.figures_cka import plot_cka
    from mimlens.report.html import build_report

    save_config({**cfg, "resolved": {"loading": {e["label"]: e["loading"] for e in entries}}}, out)
    save_json(meta, out / "compare.json")
    for e in entries:
        save_json(e["doc"], out / "attention" / f"{e['label']}.json")
    save_json({"pairs": [p.to_json() for p in pairs]}, out / "cka_across.json")
    labels = [e["label"] for e in entries]
    save_attention_figures([e["doc"] for e in entries], out / "figures", labels=labels, title=" vs ".join(labels))
    for p in pairs:
        name = "cka_across" if len(pairs) == 1 else f"cka_across_{p.model_a}_vs_{p.model_b}"
        plot_cka(p, out / "figures" / f"{name}.png")
    build_report([out], out / "report.html", title=f"mimlens compare {' vs '.join(labels)}")


def _say_summary(out: Path, entries: list[dict[str, Any]], pairs: list, dataset) -> None:
    from mimlens.commands.analyze import layer_table, say
    from mimlens.data.folders import skipped_message

    for e in entries:
        say(f"\n{e['label']} ({e['weights']}; attention from {e['from']})\n{layer_table(e['doc'])}")
    say("\nCKA between models (" + (pairs[0].estimator if pairs else "") + "):")
    for p in pairs:
        n = min(p.matrix.shape)
        say(f"  {p.model_a} vs {p.model_b}: mean diagonal {p.matrix.diagonal()[:n].nanmean().item():.3f}, "
            f"last blocks {p.matrix[-1, -1].item():.3f}")
    message = skipped_message(dataset)
    if message:
        say(message)
    if any(e["weights"] == "random init" for e in entries):
        say("note: random-init models are untrained references, not pre-trained models")
    say(f"run directory: {out}  (compare.json, attention/, cka_across.json, figures/, report.html)")
