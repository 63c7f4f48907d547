"""``mimlens analyze MODEL``: attention distance, entropy and head KL (and CKA with ``--cka``) of one model.

Writes one run directory (DESIGN.md contract): ``config.yaml``, ``attention.json``, ``attention.csv``,
``cka.json`` (with ``--cka``), ``figures/*.png`` and ``report.html``, and prints a per-layer table next
to the uniform-attention reference. Under ``torchrun`` every rank reads the same images, the attention
pass takes every world-size-th image and the CKA pass every world-size-th batch; rank 0 writes.

The functions below are shared with ``mimlens compare``.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import warnings
from pathlib import Path
from typing import Any

# The images analysed (shared with ``compare``). ``split``: DIR/<split> of a folder when it exists, else its
# own random stream of generated data; ``synthetic``: scene difficulty of generated data, None = its default.
DATA_DEFAULTS: dict[str, Any] = {
    "source": "synthetic", "num_images": 64, "seed": 0, "split": "train",
    "synthetic": {"num_objects": None, "background": None, "background_strength": None},
}
DEFAULTS: dict[str, Any] = {
    "model": {"spec": None, "arch": None},
    "data": DATA_DEFAULTS,
    "analysis": {"batch_size": 64, "prefix_policy": "renorm", "cka": False, "cka_unit": "image"},
    "run": {"device": None, "out": None, "progress": True},
}
PREFIX_POLICIES = ("renorm", "drop", "keep")
CKA_UNITS = ("image", "pooled", "token")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags ``analyze`` and ``compare`` share."""
    parser.add_argument("--data", help="synthetic[:N] (default), photos[:N] or an image folder (ImageFolder or flat)")
    parser.add_argument("--num-images", type=int, help="images to analyse (default 64)")
    parser.add_argument("--batch-size", type=int, help="images per forward pass (default 64)")
    parser.add_argument("--prefix-policy", choices=PREFIX_POLICIES,
                        help="prefix tokens (CLS, ...) as keys: renorm (default), drop or keep")
    parser.add_argument("--cka-unit", choices=CKA_UNITS,
                        help="CKA sample: image (default, patch tokens flattened), pooled or token")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--out", metavar="DIR", help="run directory to write")
    parser.add_argument("--config", metavar="YAML", help="YAML with the same keys as config.yaml; flags override it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="timm:NAME or a preset (random init), a checkpoint file (with --arch) or a run directory")
    parser.add_argument("--arch", help="for a checkpoint file: the preset or timm model it belongs to")
    parser.add_argument("--cka", action="store_true", default=None, help="also compute CKA between layers")
    add_data_arguments(parser)


def data_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data.source": args.data,
        "data.num_images": args.num_images,
        "analysis.batch_size": args.batch_size,
        "analysis.prefix_policy": args.prefix_policy,
        "analysis.cka_unit": args.cka_unit,
        "run.device": args.device,
        "run.out": args.out,
        "run.progress": False if args.no_progress else None,
    }


def run(args: argparse.Namespace) -> int:
    from mimlens import distributed
    from mimlens.config import resolve

    flags = {"model.spec": args.model, "model.arch": args.arch, "analysis.cka": args.cka, **data_flags(args)}
    cfg = resolve(DEFAULTS, args.config, flags)
    check_config(cfg)
    out = Path(cfg["run"]["out"] or Path("runs") / f"analyze_{slug(cfg['model']['spec'])}")
    cfg["run"]["out"] = str(out)
    check_out(out, "analysis")
    try:
        analyze(cfg, out)
    finally:
        distributed.shutdown()
    return 0


def check_config(cfg: dict[str, Any]) -> None:
    """Value checks for the keys ``analyze`` and ``compare`` share (the YAML bypasses argparse's choices)."""
    from mimlens.errors import MimlensError

    data, analysis = cfg["data"], cfg["analysis"]
    for key, value in (("data.num_images", data["num_images"]), ("analysis.batch_size", analysis["batch_size"])):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise MimlensError(f"{key}={value!r}: expected a positive integer")
    scenes = data["synthetic"]
    if not isinstance(scenes, dict):
        raise MimlensError(f"data.synthetic={scenes!r}: expected a mapping of scene settings (num_objects, ...)")
    if any(v is not None for v in scenes.values()) and not str(data["source"]).startswith("synthetic"):
        raise MimlensError(f"data.synthetic sets the difficulty of generated scenes, but data.source is "
                           f"{data['source']!r}: remove it or use synthetic[:N]")
    if analysis["prefix_policy"] not in PREFIX_POLICIES:
        raise MimlensError(f"analysis.prefix_policy={analysis['prefix_policy']!r}: expected one of {PREFIX_POLICIES}")
    if analysis["cka_unit"] not in CKA_UNITS:
        raise MimlensError(f"analysis.cka_unit={analysis['cka_unit']!r}: expected one of {CKA_UNITS}")


def check_out(out: Path, marker: str) -> None:
    """Refuse to write into a directory whose ``config.yaml`` belongs to another kind of run (a training
    run's config would be overwritten); ``marker`` is a top-level key of this command's config."""
    from mimlens.config import load_yaml
    from mimlens.errors import MimlensError

    config = out / "config.yaml"
    if config.is_file() and marker not in load_yaml(config):
        raise MimlensError(f"{out} holds another kind of run ({config} has no {marker!r} key): choose another --out")


def slug(text: str) -> str:
    """A file-name-safe short form of a MODEL spelling (``timm:vit_small`` → ``vit_small``)."""
    name = Path(str(text).removeprefix("timm:").rstrip("/")).name or str(text)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def describe_weights(info: dict[str, Any]) -> str:
    """``"random init"`` for ``timm:NAME`` and presets, else where the weights came from."""
    if info.get("format") == "init":
        return "random init"
    if "run" in info:
        return f"run {info['source']}"
    return f"{info.get('format', 'checkpoint')} checkpoint {info.get('source', '')}".strip()


def load(spec: str, arch: str | None):
    """``(model, info)`` for a MODEL spelling, in eval mode."""
    from mimlens.models import load_model

    model, info = load_model(spec, arch)
    return model.eval(), info


def image_dataset(data: dict[str, Any], img_size: int | tuple[int, int]):
    """The first ``data["num_images"]`` raw images (float RGB in [0, 1], ``img_size``) of a config's
    ``data`` section: ``source``, ``split`` (``DIR/<split>`` when it exists; for generated data its own
    random stream) and ``synthetic`` (scene difficulty, None = the data default).

    Unreadable files are left out by the dataset and named by :func:`skipped_files` (not warned about)."""
    from torch.utils.data import Subset

    from mimlens.data import build_dataset

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unreadable", category=UserWarning)
        scenes = data["synthetic"] if str(data["source"]).startswith("synthetic") else {}
        dataset = build_dataset(data["source"], img_size=img_size, seed=data["seed"], split=data["split"], **scenes)
    return Subset(dataset, range(min(data["num_images"], len(dataset))))


def skipped_files(dataset) -> list[str]:
    """The files of an image folder left out as unreadable so far, each once."""
    return list(dict.fromkeys(path for path, _ in getattr(dataset.dataset, "skipped", [])))


def batches(dataset, batch_size: int, transform=None, rank: int = 0, world: int = 1):
    """Image batches of ``dataset`` (every ``world``-th image from ``rank``), optionally transformed."""
    import torch
    from torch.utils.data import DataLoader, Subset

    indices = range(rank, len(dataset), world)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unreadable", category=UserWarning)
        for batch in DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False):
            images = batch["image"]
            if transform is not None:
                with torch.no_grad():
                    images = transform(images)
            yield images


def attention_pass(model, dataset, cfg: dict[str, Any], device, progress: bool):
    """:class:`AttentionStats` of ``model`` on its share of ``dataset``, each image through the model's
    own preprocessing (resize to its input size, normalise with its mean and std)."""
    from mimlens import distributed
    from mimlens.probe.attention import attention_stats
    from mimlens.probe.features import model_transform

    model.to(device)
    transform = model_transform(model)
    stream = batches(dataset, cfg["analysis"]["batch_size"], lambda x: transform(x.to(device)),
                     distributed.rank(), distributed.world_size())
    return attention_stats(model, stream, prefix_policy=cfg["analysis"]["prefix_policy"], device=device,
                           progress=progress)


def cka_pass(model_a, dataset, cfg: dict[str, Any], device, progress: bool, model_b=None):
    """:class:`CKAResult` within ``model_a`` or between two models, on the same raw images in the same
    order, each model with its own preprocessing (``cka_matrix`` splits batches over ranks itself)."""
    from mimlens.probe.cka import cka_matrix

    analysis = cfg["analysis"]
    stream = batches(dataset, analysis["batch_size"])
    return cka_matrix(model_a, stream, model_b, unit=analysis["cka_unit"], batch_size=max(4, analysis["batch_size"]),
                      prefix_policy=analysis["prefix_policy"], device=device, progress=progress)


def attention_document(stats, spec: str, model, weights: str, dataset, source: str) -> dict[str, Any]:
    """``attention.json``: the statistics' own JSON plus the MODEL spelling, its timm architecture, the weights
    and the data used (with the files skipped as unreadable)."""
    doc = stats.to_json(spec)
    doc.update(architecture=getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__),
               weights=weights, data=source, skipped_files=skipped_files(dataset))
    return doc


def write_attention(doc: dict[str, Any], stats, out: Path) -> None:
    from mimlens.io import save_json, save_text

    save_json(doc, out / "attention.json")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("layer", "head", "metric", "value"))
    writer.writerows(stats.to_csv_rows())
    save_text(text.getvalue(), out / "attention.csv")


def layer_table(doc: dict[str, Any]) -> str:
    from mimlens.report.summary import LAYER_COLUMNS, attention_layer_rows, text_table

    return text_table(LAYER_COLUMNS, attention_layer_rows(doc))


def progress_enabled(cfg: dict[str, Any]) -> bool:
    return bool(cfg["run"]["progress"]) and sys.stderr.isatty()


def analyze(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run the analysis ``cfg`` describes and write the run directory ``out`` (rank 0); returns the
    ``attention.json`` document."""
    from mimlens import distributed
    from mimlens.config import save_config
    from mimlens.models import preprocessing
    from mimlens.report.figures_attention import save_attention_figures
    from mimlens.report.figures_cka import plot_cka
    from mimlens.report.html import build_report

    device = distributed.init(cfg["run"]["device"])
    main = distributed.is_main()
    spec, progress = cfg["model"]["spec"], progress_enabled(cfg) and distributed.is_main()
    model, info = load(spec, cfg["model"]["arch"])
    weights = describe_weights(info)
    data = cfg["data"]
    dataset = image_dataset(data, preprocessing(model)["img_size"])
    if main:
        say(f"analyze {spec} ({weights}) on {len(dataset)} images of {data['source']}")
    stats = attention_pass(model, dataset, cfg, device, progress)
    cka = cka_pass(model, dataset, cfg, device, progress) if cfg["analysis"]["cka"] else None
    doc = attention_document(stats, spec, model, weights, dataset, data["source"])
    if main:
        if doc["skipped_files"]:
            say(f"skipped {len(doc['skipped_files'])} unreadable file(s): "
                + ", ".join(Path(p).name for p in doc["skipped_files"]))
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out)
        write_attention(doc, stats, out)
        save_attention_figures(stats, out / "figures", labels=[slug(spec)], title=f"{spec} ({weights})")
        if cka is not None:
            from mimlens.io import save_json

            save_json(cka.to_json(), out / "cka.json")
            plot_cka(cka, out / "figures" / "cka_within.png", title=f"CKA between layers of {spec}")
        build_report([out], out / "report.html", title=f"mimlens analyze {spec}")
        say(layer_table(doc))
        if weights == "random init":
            say("note: the weights are a random initialisation (no checkpoint was loaded); these numbers describe "
                "an untrained model")
        say(f"run directory: {out}  (attention.json, attention.csv{', cka.json' if cka else ''}, figures/, "
            "report.html)")
    distributed.barrier()
    return doc


def say(text: str) -> None:
    print(text, flush=True)
