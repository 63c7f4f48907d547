"""The analysis of one model: its images, the analyses of :mod:`mimlens.analysis.registry` it runs, and the run
directory they fill.

Run directory: ``config.yaml`` (with ``resolved.loading``), ``analysis.json`` (the model's record of
:func:`model_meta`: the MODEL spelling, its timm ``architecture``, the ``weights``, the ``loading`` record, the
``data``, the ``skipped_files``, the ``seed`` of a random initialisation or the training ``step`` of a run's
weights when known; with ``num_images`` and the ``analyses`` run), ``<name>.json`` per analysis (``attention.json``
carries the record too, ``attention.csv`` beside it; ``cka.json``), ``figures/*.png`` and ``report.html``.

Random initialisations are seeded (``model.seed``, default 0): the same config gives the same weights, so an
analysis can be repeated exactly and ``mimlens compare`` rebuilds the very model an analysis measured.

Images follow the input contract of :mod:`mimlens.analysis.inputs`: the dataset yields raw RGB in [0, 1] and each
model applies its own preprocessing, in every analysis. Under ``torchrun`` every rank reads the same images, the
attention pass takes every world-size-th image and the CKA pass every world-size-th batch; every rank gets the
same numbers and rank 0 writes.

Heavy modules are imported inside the functions, so that argument parsers can import this one cheaply.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mimlens.analysis.choices import PREFIX_POLICIES, SIMILARITY_DEFAULTS, UNITS, check_similarity
from mimlens.errors import MimlensError
from mimlens.model_names import check_loading

__all__ = [
    "ANALYSIS_DEFAULTS",
    "CKA_CALIBRATION",
    "DATA_DEFAULTS",
    "MODEL_DEFAULTS",
    "analyze",
    "check_config",
    "check_model",
    "image_dataset",
    "measure_documents",
    "model_meta",
    "progress_enabled",
    "remove_stale",
    "selected_analyses",
    "skipped_files",
]

# The images analysed. ``split``: DIR/<split> of a folder when it exists, else its own random stream of
# generated data; ``synthetic``: scene difficulty of generated data, None = its default.
DATA_DEFAULTS: dict[str, Any] = {
    "source": "synthetic", "num_images": 64, "seed": 0, "split": "train",
    "synthetic": {"num_objects": None, "background": None, "background_strength": None},
}
# CKA's calibration (:func:`mimlens.analysis.cka.cka_matrix`): half-sample replicates of the interval and
# permutations of the null; 0 turns each off.
CKA_CALIBRATION: dict[str, int] = {"cka_bootstrap": 200, "cka_permutations": 200}
# ``names``: the analyses to run (:data:`mimlens.analysis.registry.ANALYSES`); ``cka: true`` adds CKA to them;
# ``similarity``: the settings of the similarity analysis (:data:`mimlens.analysis.choices.SIMILARITY_DEFAULTS`).
ANALYSIS_DEFAULTS: dict[str, Any] = {"names": ["attention"], "batch_size": 64, "prefix_policy": "renorm",
                                     "cka": False, "cka_unit": "image", **CKA_CALIBRATION, "every_checkpoint": False,
                                     "similarity": SIMILARITY_DEFAULTS}
MODEL_DEFAULTS: dict[str, Any] = {"spec": None, "arch": None, "seed": 0, "pretrained": False, "encoder": "base"}


def check_config(cfg: dict[str, Any]) -> None:
    """Value checks of the ``data`` and ``analysis`` sections (a YAML config bypasses argparse's choices)."""
    data, analysis = cfg["data"], cfg["analysis"]
    for key, value in (("data.num_images", data["num_images"]), ("analysis.batch_size", analysis["batch_size"])):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise MimlensError(f"{key}={value!r}: expected a positive integer")
    for key in CKA_CALIBRATION:
        value = analysis[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MimlensError(f"analysis.{key}={value!r}: expected an integer >= 0 (0 turns it off)")
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
    names = [entry.name for entry in selected_analyses(analysis)]
    check_similarity(analysis["similarity"], "analysis.similarity",
                     images=data["num_images"] if "similarity" in names else None)


def check_model(model: dict[str, Any]) -> None:
    """Value checks of the ``model`` section: a ``spec`` is given; ``pretrained`` and ``encoder`` as
    :func:`check_loading` wants them."""
    if not model.get("spec"):
        raise MimlensError("no MODEL: give it on the command line, or --config a YAML with model.spec "
                           "(e.g. a run's config.yaml)")
    check_loading(model["pretrained"], model["encoder"], "model.")


def progress_enabled(cfg: dict[str, Any]) -> bool:
    """Progress bars: asked for (``run.progress``) and shown on a terminal."""
    return bool(cfg["run"]["progress"]) and sys.stderr.isatty()


def image_dataset(data: dict[str, Any], img_size: int | tuple[int, int]):
    """The first ``data["num_images"]`` raw images (float RGB in [0, 1], ``img_size``) of a config's ``data``
    section: ``source``, ``split`` and ``synthetic`` (see :data:`DATA_DEFAULTS`).

    Of an image folder, the first readable ones (:meth:`~mimlens.data.folders.ImageFiles.first_readable`), so
    that each image is analysed once; unreadable files are listed by :func:`skipped_files` and reported in the
    one line of :func:`mimlens.data.folders.skipped_message`."""
    from torch.utils.data import Subset

    from mimlens.data import ImageFiles, build_dataset

    scenes = data["synthetic"] if str(data["source"]).startswith("synthetic") else {}
    dataset = build_dataset(data["source"], img_size=img_size, seed=data["seed"], split=data["split"], **scenes)
    if isinstance(dataset, ImageFiles):
        return Subset(dataset, dataset.first_readable(data["num_images"]))
    return Subset(dataset, range(min(data["num_images"], len(dataset))))


def skipped_files(dataset) -> list[str]:
    """The files of an image folder left out as unreadable so far, each once."""
    return [path for path, _ in getattr(dataset.dataset, "skipped", [])]


def selected_analyses(analysis: dict[str, Any]) -> list:
    """The analyses an ``analysis`` section asks for: ``names``, with ``cka`` added when ``cka`` is true."""
    from mimlens.analysis.registry import selected

    names = analysis.get("names")
    return selected([*names, "cka"] if analysis.get("cka") and isinstance(names, list) else names)


def remove_stale(out: Path, written: list, over_training: bool = False) -> None:
    """Delete from ``out`` what an earlier analysis left there and this one does not write again (another
    analysis's ``<name>.json`` and files, or the per-step folders of ``--every-checkpoint``), so that nothing from
    an earlier analysis (e.g. another model's ``cka.json``) outlives a rerun."""
    import shutil

    from mimlens.analysis.registry import ANALYSES

    one_model = {name for entry in ANALYSES.values() for name in (*entry.outputs(), "analysis.json", "report.html")}
    steps = {name for entry in ANALYSES.values() for name in (entry.name, *entry.over_training_files)}
    keep = {name for entry in written for name in (entry.name, *entry.over_training_files)} if over_training else {
        name for entry in written for name in (*entry.outputs(), "analysis.json", "report.html")}
    for name in sorted((one_model | steps) - keep):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def model_meta(spec: str, model, info: dict[str, Any], dataset, source: str) -> dict[str, Any]:
    """The record every analysis document of a model carries: the MODEL spelling, its timm architecture, the
    weights (with the seed of a random initialisation, the step of a run's weights), what loading did
    (``loading``) and the data used (with the files skipped as unreadable)."""
    from mimlens.models.describe import describe_weights, loading_record

    meta = {"model": spec, "architecture": getattr(model, "pretrained_cfg", {}).get("architecture",
                                                                                     type(model).__name__),
            "weights": describe_weights(info), "loading": loading_record(info, model), "data": source,
            "skipped_files": skipped_files(dataset)}
    meta.update({key: info[key] for key in ("seed", "step") if info.get(key) is not None})
    return meta


def measure_documents(entries: list, ctx, meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each analysis's document of one model: its result's JSON, or the entry's own ``document(result, meta)``."""
    docs = {}
    for entry in entries:
        result = entry.function("measure")(ctx)
        document = entry.function("document")
        docs[entry.name] = document(result, meta) if document else result.to_json()
    return docs


def analyze(cfg: dict[str, Any], out: Path, log: Callable[[str], None] = print
            ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Run the analyses ``cfg`` describes (sections ``model: {spec, arch, seed, pretrained, encoder}``, ``data``,
    ``analysis``, ``run``) and write the run directory ``out`` (rank 0): ``config.yaml``, ``analysis.json`` (the
    model's record and the analyses run) and ``<name>.json`` per analysis with its figures (the command adds
    ``report.html``). Returns the model's record and the documents by analysis name. ``log`` gets what rank 0
    reports while it works."""
    from mimlens import distributed
    from mimlens.analysis.registry import MeasureContext
    from mimlens.config import save_config
    from mimlens.data.folders import skipped_message
    from mimlens.io import save_json
    from mimlens.model_names import model_label
    from mimlens.models import preprocessing
    from mimlens.models.describe import load, loading_lines

    entries = selected_analyses(cfg["analysis"])
    device = distributed.init(cfg["run"]["device"])
    main = distributed.is_main()
    spec = cfg["model"]["spec"]
    model, info = load(spec, cfg["model"]["arch"], cfg["model"]["seed"], pretrained=cfg["model"]["pretrained"],
                       encoder=cfg["model"]["encoder"])
    data = cfg["data"]
    dataset = image_dataset(data, preprocessing(model)["img_size"])
    meta = model_meta(spec, model, info, dataset, data["source"])
    if main:
        log(f"analyze {spec} ({meta['weights']}) on {len(dataset)} images of {data['source']}")
        for line in loading_lines(info, meta["loading"]):
            log(f"  {line}")
    ctx = MeasureContext(model, dataset, cfg["analysis"], device, progress_enabled(cfg) and main, model_label(spec))
    docs = measure_documents(entries, ctx, meta)
    message = skipped_message(dataset)  # a collective
    if main:
        if message:
            log(message)
        out.mkdir(parents=True, exist_ok=True)
        remove_stale(out, entries)
        save_config({**cfg, "resolved": {"loading": meta["loading"]}}, out)
        save_json({**meta, "num_images": len(dataset), "analyses": [e.name for e in entries]}, out / "analysis.json")
        for entry in entries:
            save_json(docs[entry.name], out / entry.json_name)
            write_extras(entry, docs[entry.name], out, ctx.label, f"{spec} ({meta['weights']})")
    distributed.barrier()
    return meta, docs


def write_extras(entry, doc: dict[str, Any], out: Path, label: str, title: str) -> None:
    """An analysis's figures of one model and its other files (``tables``)."""
    for hook, args in (("figures", ([doc], [label], out / "figures", title)), ("tables", (doc, out))):
        function = entry.function(hook)
        if function:
            function(*args)
