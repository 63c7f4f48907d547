"""The analysis of one model: its images, the attention and CKA passes, and the run directory they fill.

Run directory: ``config.yaml``, ``attention.json`` (:meth:`AttentionStats.to_json` plus the MODEL spelling,
its timm ``architecture``, the ``weights``, the ``data``, the ``skipped_files``, and the ``seed`` of a random
initialisation or the training ``step`` of a run's weights when known), ``attention.csv``, ``cka.json`` (with
``analysis.cka``), ``figures/*.png`` and ``report.html``.

Random initialisations are seeded (``model.seed``, default 0): the same config gives the same weights, so an
analysis can be repeated exactly and ``mimlens compare`` rebuilds the very model an analysis measured.

Images follow the input contract of :mod:`mimlens.probe.inputs`: the dataset yields raw RGB in [0, 1] and each
model applies its own preprocessing, in the attention pass as in the CKA pass. Under ``torchrun`` every rank
reads the same images, the attention pass takes every world-size-th image and the CKA pass every world-size-th
batch; every rank gets the same numbers and rank 0 writes.

Heavy modules are imported inside the functions, so that argument parsers can import this one cheaply.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mimlens.errors import MimlensError
from mimlens.probe.choices import PREFIX_POLICIES, UNITS

__all__ = [
    "ANALYSIS_DEFAULTS",
    "DATA_DEFAULTS",
    "MODEL_DEFAULTS",
    "analyze",
    "attention_document",
    "attention_pass",
    "check_config",
    "cka_pass",
    "describe_weights",
    "image_dataset",
    "load",
    "progress_enabled",
    "raw_batches",
    "skipped_files",
    "slug",
]

# The images analysed. ``split``: DIR/<split> of a folder when it exists, else its own random stream of
# generated data; ``synthetic``: scene difficulty of generated data, None = its default.
DATA_DEFAULTS: dict[str, Any] = {
    "source": "synthetic", "num_images": 64, "seed": 0, "split": "train",
    "synthetic": {"num_objects": None, "background": None, "background_strength": None},
}
ANALYSIS_DEFAULTS: dict[str, Any] = {"batch_size": 64, "prefix_policy": "renorm", "cka": False, "cka_unit": "image",
                                     "every_checkpoint": False}
MODEL_DEFAULTS: dict[str, Any] = {"spec": None, "arch": None, "seed": 0}


def check_config(cfg: dict[str, Any]) -> None:
    """Value checks of the ``data`` and ``analysis`` sections (a YAML config bypasses argparse's choices)."""
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
    if analysis["cka_unit"] not in UNITS:
        raise MimlensError(f"analysis.cka_unit={analysis['cka_unit']!r}: expected one of {UNITS}")


def slug(text: str) -> str:
    """A file-name-safe short form of a MODEL spelling (``timm:vit_small`` → ``vit_small``)."""
    name = Path(str(text).removeprefix("timm:").rstrip("/")).name or str(text)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def progress_enabled(cfg: dict[str, Any]) -> bool:
    """Progress bars: asked for (``run.progress``) and shown on a terminal."""
    return bool(cfg["run"]["progress"]) and sys.stderr.isatty()


def describe_weights(info: dict[str, Any]) -> str:
    """``"random init"`` for ``timm:NAME`` and presets, else where the weights came from (and the training step
    of a run's weights, with the file when it is not the finished run's backbone)."""
    if info.get("format") == "init":
        return "random init"
    if "run" not in info:
        return f"{info.get('format', 'checkpoint')} checkpoint {info.get('source', '')}".strip()
    text = f"run {info['source']}" + (f" at step {info['step']}" if "step" in info else "")
    if info.get("finished") is False:
        text += f" ({Path(info['weights_file']).name}; training has not finished)"
    return text


def load(spec: str, arch: str | None, seed: int | None = None):
    """``(model, info)`` for a MODEL spelling, in eval mode; ``seed`` fixes a random initialisation."""
    from mimlens.models import load_model

    model, info = load_model(spec, arch, seed=seed)
    if info.get("format") == "init":
        info["seed"] = seed
    return model.eval(), info


def image_dataset(data: dict[str, Any], img_size: int | tuple[int, int]):
    """The first ``data["num_images"]`` raw images (float RGB in [0, 1], ``img_size``) of a config's ``data``
    section: ``source``, ``split`` and ``synthetic`` (see :data:`DATA_DEFAULTS`).

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


def raw_batches(dataset, batch_size: int, rank: int = 0, world: int = 1):
    """Raw image batches of ``dataset``: every ``world``-th image from ``rank``, in order."""
    from torch.utils.data import DataLoader, Subset

    indices = range(rank, len(dataset), world)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unreadable", category=UserWarning)
        for batch in DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False):
            yield batch["image"]


def attention_pass(model, dataset, analysis: dict[str, Any], device, progress: bool):
    """:class:`AttentionStats` of ``model`` on ``dataset`` (this rank's share of it; the sums are all-reduced)."""
    from mimlens import distributed
    from mimlens.probe.attention import attention_stats

    stream = raw_batches(dataset, analysis["batch_size"], distributed.rank(), distributed.world_size())
    return attention_stats(model, stream, prefix_policy=analysis["prefix_policy"], device=device, progress=progress)


def cka_pass(model_a, dataset, analysis: dict[str, Any], device, progress: bool, model_b=None):
    """:class:`CKAResult` within ``model_a`` or between two models, on the same raw images in the same order
    (``cka_matrix`` splits the batches over ranks itself)."""
    from mimlens.probe.cka import cka_matrix

    return cka_matrix(model_a, raw_batches(dataset, analysis["batch_size"]), model_b, unit=analysis["cka_unit"],
                      batch_size=max(4, analysis["batch_size"]), prefix_policy=analysis["prefix_policy"],
                      device=device, progress=progress)


def attention_document(stats, spec: str, model, info: dict[str, Any], dataset, source: str) -> dict[str, Any]:
    """``attention.json``: the statistics' own JSON plus the MODEL spelling, its timm architecture, the weights
    (with the seed of a random initialisation, the step of a run's weights) and the data used (with the files
    skipped as unreadable)."""
    doc = stats.to_json(spec)
    doc.update(architecture=getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__),
               weights=describe_weights(info), data=source, skipped_files=skipped_files(dataset))
    doc.update({key: info[key] for key in ("seed", "step") if info.get(key) is not None})
    return doc


def analyze(cfg: dict[str, Any], out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the analysis ``cfg`` describes (sections ``model: {spec, arch}``, ``data``, ``analysis``, ``run``) and
    write the run directory ``out`` (rank 0); returns the ``attention.json`` document. ``log`` gets what rank 0
    reports while it works (the model and images, skipped files)."""
    from mimlens import distributed
    from mimlens.config import save_config
    from mimlens.io import save_json
    from mimlens.models import preprocessing
    from mimlens.report.figures_attention import save_attention_figures
    from mimlens.report.figures_cka import plot_cka
    from mimlens.report.html import build_report

    device = distributed.init(cfg["run"]["device"])
    main = distributed.is_main()
    spec, progress = cfg["model"]["spec"], progress_enabled(cfg) and main
    model, info = load(spec, cfg["model"]["arch"], cfg["model"]["seed"])
    weights = describe_weights(info)
    data, analysis = cfg["data"], cfg["analysis"]
    dataset = image_dataset(data, preprocessing(model)["img_size"])
    if main:
        log(f"analyze {spec} ({weights}) on {len(dataset)} images of {data['source']}")
    stats = attention_pass(model, dataset, analysis, device, progress)
    cka = cka_pass(model, dataset, analysis, device, progress) if analysis["cka"] else None
    doc = attention_document(stats, spec, model, info, dataset, data["source"])
    if main:
        if doc["skipped_files"]:
            log(f"skipped {len(doc['skipped_files'])} unreadable file(s): "
                + ", ".join(Path(p).name for p in doc["skipped_files"]))
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out)
        stats.save(out, spec, extra=doc)
        save_attention_figures(stats, out / "figures", labels=[slug(spec)], title=f"{spec} ({weights})")
        if cka is not None:
            save_json(cka.to_json(), out / "cka.json")
            plot_cka(cka, out / "figures" / "cka_within.png", title=f"CKA between layers of {spec}")
        build_report([out], out / "report.html", title=f"mimlens analyze {spec}")
    distributed.barrier()
    return doc
