"""The analysis of one model: its images, the attention and CKA passes, and the run directory they fill.

Run directory: ``config.yaml`` (with ``resolved.loading``), ``attention.json`` (:meth:`AttentionStats.to_json`
plus the MODEL spelling, its timm ``architecture``, the ``weights``, the ``loading`` record of
:func:`loading_record`, the ``data``, the ``skipped_files``, and the ``seed`` of a random initialisation or the
training ``step`` of a run's weights when known), ``attention.csv``, ``cka.json`` (with ``analysis.cka``),
``figures/*.png`` and ``report.html``.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mimlens.errors import MimlensError
from mimlens.probe.choices import PREFIX_POLICIES, UNITS

__all__ = [
    "ANALYSIS_DEFAULTS",
    "DATA_DEFAULTS",
    "ENCODERS",
    "MODEL_DEFAULTS",
    "analyze",
    "attention_document",
    "attention_pass",
    "check_config",
    "check_loading",
    "check_model",
    "cka_pass",
    "describe_weights",
    "image_dataset",
    "load",
    "loading_lines",
    "loading_record",
    "model_label",
    "progress_enabled",
    "raw_batches",
    "remove_stale",
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
MODEL_DEFAULTS: dict[str, Any] = {"spec": None, "arch": None, "seed": 0, "pretrained": False, "encoder": "base"}
ENCODERS = ("base", "momentum")  # MoCo v3's two encoders
# The key lists of a load, as ``loading_record`` counts and lists them.
KEY_LISTS = {"dropped": ("dropped_keys", "dropped_head_keys"), "missing": ("missing_keys",),
             "resized": ("resized_keys",)}


# What an analysis writes, by part: a rerun into the same run directory removes the parts it does not write
# again, so that nothing from an earlier analysis (e.g. another model's cka.json) outlives it.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "attention": ("attention.json", "attention.csv", "figures/attention_distance.png",
                  "figures/attention_entropy.png", "figures/head_kl.png", "report.html"),
    "cka": ("cka.json", "figures/cka_within.png"),
    "over_training": ("attention_over_training.json", "attention", "figures/attention_over_training.png"),
}


def remove_stale(out: Path, written: tuple[str, ...]) -> None:
    """Delete the :data:`OUTPUTS` of every part not in ``written`` from ``out`` (files and folders)."""
    import shutil

    for part, names in OUTPUTS.items():
        if part in written:
            continue
        for name in names:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


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


def check_model(model: dict[str, Any]) -> None:
    """Value checks of the ``model`` section: a ``spec`` is given; ``pretrained`` and ``encoder`` as
    :func:`check_loading` wants them."""
    if not model.get("spec"):
        raise MimlensError("no MODEL: give it on the command line, or --config a YAML with model.spec "
                           "(e.g. a run's config.yaml)")
    check_loading(model["pretrained"], model["encoder"], "model.")


def check_loading(pretrained: Any, encoder: Any, prefix: str = "") -> None:
    """``pretrained`` is a boolean and ``encoder`` one of :data:`ENCODERS` (keys named with ``prefix``)."""
    if not isinstance(pretrained, bool):
        raise MimlensError(f"{prefix}pretrained={pretrained!r}: expected true or false")
    if encoder not in ENCODERS:
        raise MimlensError(f"{prefix}encoder={encoder!r}: expected one of {', '.join(ENCODERS)}")


def slug(text: str) -> str:
    """A file-name-safe short form of a MODEL spelling (``timm:vit_small`` → ``vit_small``)."""
    name = Path(str(text).removeprefix("timm:").rstrip("/")).name or str(text)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def model_label(spec: str) -> str:
    """The name figures give a MODEL spelling: a preset or timm name as written (``timm:`` dropped), a run
    directory's folder name, and for a checkpoint inside a run (``RUN/checkpoints/last.pt``) the run's folder
    name, with the step of a snapshot (``RUN/checkpoints/step_500.safetensors`` → ``RUN-step_500``); any other
    file keeps its file name. File-name safe, as :func:`slug`."""
    path = Path(str(spec))
    if path.parent.name == "checkpoints" and path.parent.parent.name:
        step = path.stem if path.stem.startswith("step_") else ""
        return slug(path.parent.parent.name + (f"-{step}" if step else ""))
    return slug(spec)


def progress_enabled(cfg: dict[str, Any]) -> bool:
    """Progress bars: asked for (``run.progress``) and shown on a terminal."""
    return bool(cfg["run"]["progress"]) and sys.stderr.isatty()


def describe_weights(info: dict[str, Any]) -> str:
    """``"random init"`` for ``timm:NAME`` and presets, else where the weights came from (and the training step
    of a run's weights, with the file when it is not the finished run's backbone)."""
    if info.get("format") == "init":
        return "random init"
    if info.get("format") == "timm-pretrained":
        return f"pretrained {info.get('hub') or info['source']}"
    if "run" not in info:
        encoder = f" ({info['encoder']} encoder)" if info.get("encoder") else ""
        return f"{info.get('format', 'checkpoint')} checkpoint {info.get('source', '')}".strip() + encoder
    text = f"run {info['source']}" + (f" at step {info['step']}" if "step" in info else "")
    if info.get("encoder"):
        text += f", {info['encoder']} encoder"
    if info.get("finished") is False:
        text += f" ({Path(info['weights_file']).name}; training has not finished)"
    return text


def load(spec: str, arch: str | None, seed: int | None = None, *, pretrained: bool = False, encoder: str = "base"):
    """``(model, info)`` for a MODEL spelling, in eval mode; ``seed`` fixes a random initialisation, ``pretrained``
    reads timm's pretrained weights of a ``timm:NAME.TAG``, ``encoder`` picks MoCo v3's base or momentum encoder."""
    from mimlens.models import load_model

    model, info = load_model(spec, arch, pretrained=pretrained, moco_encoder=encoder, seed=seed)
    if encoder != "base" and info.get("encoder") != encoder:
        raise MimlensError(f"encoder {encoder!r} is for MoCo v3 checkpoints, and {spec} is "
                           f"{describe_weights(info)}")
    if info.get("format") == "init":
        info["seed"] = seed
    return model.eval(), info


def loading_record(info: dict[str, Any], model) -> dict[str, Any]:
    """What loading did, as ``config.yaml`` and ``attention.json`` record it: the format (with the hub id and
    cache of pretrained weights, the MoCo v3 encoder), the number and full list of dropped, missing and
    resized keys, the classifier's handling, and the mean and std the images are normalised with, and why."""
    from mimlens.models import preprocessing

    prep = preprocessing(model)
    record = {key: info[key] for key in ("format", "format_description", "hub", "cache", "encoder", "wrapper")
              if info.get(key)}
    if info.get("format") != "init":
        lists = {key: list(info.get(key) or []) for keys in KEY_LISTS.values() for key in keys}
        record["counts"] = {kind: sum(len(lists[k]) for k in keys) for kind, keys in KEY_LISTS.items()}
        record.update(lists, head=info.get("head", "as the weights hold it"))
    why = "the architecture's own (random init)" if info.get("format") == "init" else "the model's own configuration"
    return {**record, "mean": list(prep["mean"]), "std": list(prep["std"]),
            "normalisation": info.get("normalisation", why)}


def loading_lines(info: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """What loading did, to print: the loader's own summary, else the mean and std used and why."""
    if info.get("summary"):
        return list(info["summary"])
    mean, std = (", ".join(f"{v:.3g}" for v in record[key]) for key in ("mean", "std"))
    return [f"normalisation: mean ({mean}), std ({std}): {record['normalisation']}"]


def image_dataset(data: dict[str, Any], img_size: int | tuple[int, int]):
    """The first ``data["num_images"]`` raw images (float RGB in [0, 1], ``img_size``) of a config's ``data``
    section: ``source``, ``split`` and ``synthetic`` (see :data:`DATA_DEFAULTS`).

    Unreadable files are left out by the dataset, listed by :func:`skipped_files` and reported in the one line of
    :func:`mimlens.data.folders.skipped_message`."""
    from torch.utils.data import Subset

    from mimlens.data import build_dataset

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
    (with the seed of a random initialisation, the step of a run's weights), what loading did (``loading``) and
    the data used (with the files skipped as unreadable)."""
    doc = stats.to_json(spec)
    doc.update(architecture=getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__),
               weights=describe_weights(info), loading=loading_record(info, model), data=source,
               skipped_files=skipped_files(dataset))
    doc.update({key: info[key] for key in ("seed", "step") if info.get(key) is not None})
    return doc


def analyze(cfg: dict[str, Any], out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the analysis ``cfg`` describes (sections ``model: {spec, arch, seed, pretrained, encoder}``, ``data``,
    ``analysis``, ``run``) and write the run directory ``out`` (rank 0); returns the ``attention.json`` document.
    ``log`` gets what rank 0 reports while it works (the model and images, what loading did, skipped files)."""
    from mimlens import distributed
    from mimlens.config import save_config
    from mimlens.data.folders import skipped_message
    from mimlens.io import save_json
    from mimlens.models import preprocessing
    from mimlens.report.figures_attention import save_attention_figures
    from mimlens.report.figures_cka import plot_cka
    from mimlens.report.html import build_report

    device = distributed.init(cfg["run"]["device"])
    main = distributed.is_main()
    spec, progress = cfg["model"]["spec"], progress_enabled(cfg) and main
    model, info = load(spec, cfg["model"]["arch"], cfg["model"]["seed"], pretrained=cfg["model"]["pretrained"],
                       encoder=cfg["model"]["encoder"])
    weights = describe_weights(info)
    data, analysis = cfg["data"], cfg["analysis"]
    dataset = image_dataset(data, preprocessing(model)["img_size"])
    if main:
        log(f"analyze {spec} ({weights}) on {len(dataset)} images of {data['source']}")
        for line in loading_lines(info, loading_record(info, model)):
            log(f"  {line}")
    stats = attention_pass(model, dataset, analysis, device, progress)
    cka = cka_pass(model, dataset, analysis, device, progress) if analysis["cka"] else None
    doc = attention_document(stats, spec, model, info, dataset, data["source"])
    if main:
        message = skipped_message(dataset)
        if message:
            log(message)
        out.mkdir(parents=True, exist_ok=True)
        remove_stale(out, ("attention", "cka") if cka is not None else ("attention",))
        save_config({**cfg, "resolved": {"loading": doc["loading"]}}, out)
        stats.save(out, spec, extra=doc)
        save_attention_figures(stats, out / "figures", labels=[model_label(spec)], title=f"{spec} ({weights})")
        if cka is not None:
            cka.model_a = model_label(spec)  # the axes name the model as the user did, not its timm class
            save_json(cka.to_json(), out / "cka.json")
            plot_cka(cka, out / "figures" / "cka_within.png", title=f"CKA between layers of {spec}")
        build_report([out], out / "report.html", title=f"mimlens analyze {spec}")
    distributed.barrier()
    return doc
