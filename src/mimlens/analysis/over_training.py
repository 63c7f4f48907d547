"""The analyses against training step: every backbone snapshot of a run, and its final backbone.

The points are the run's ``checkpoints/step_<N>.safetensors`` (:mod:`mimlens.models.snapshots`) and, once it has
finished, ``backbone.safetensors`` at the step of ``checkpoints/last.pt``. Each is analysed on the same raw images
(:mod:`mimlens.analysis.inputs`) exactly as ``mimlens analyze`` analyses one model, by every selected one-model
analysis of :mod:`mimlens.analysis.registry`. Writes into ``out``: ``config.yaml``; ``<name>/step_<N>.json``, each
point's document (with its ``step``); and what each analysis's ``over_training`` hook writes — for attention
``attention_over_training.json`` (``run``, ``model``, ``data``, ``num_images``, ``prefix_policy``, ``layers``,
``steps`` (increasing), ``files`` (the weights of each step) and, per step and layer, the mean over heads of
``distance_px``, ``entropy`` and the layer's ``head_kl_mean``; heads without a value left out, null if none) and
``figures/attention_over_training.png``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mimlens.errors import MimlensError

__all__ = ["analyze_over_training", "attention_over_training", "layer_means", "training_points"]


def training_points(run: Path) -> tuple[list[tuple[int, Path]], str | None]:
    """``(step, weights file)`` of every snapshot and of the final backbone by increasing step, and a note when
    the final backbone is left out (no ``last.pt`` gives its step)."""
    from mimlens.models.load import BACKBONE_FILE
    from mimlens.models.snapshots import CHECKPOINTS, LAST_CHECKPOINT, checkpoint_step, list_snapshots

    points, note = list_snapshots(run), None
    backbone, last = run / BACKBONE_FILE, run / CHECKPOINTS / LAST_CHECKPOINT
    if backbone.is_file() and last.is_file():
        step = checkpoint_step(last)
        points = sorted([p for p in points if p[0] != step] + [(step, backbone)])
    elif backbone.is_file():
        note = f"{backbone} is left out: no {CHECKPOINTS}/{LAST_CHECKPOINT} gives the step it was written at"
    if not points:
        raise MimlensError(f"run directory {run} has no backbone snapshots ({CHECKPOINTS}/step_<N>.safetensors): "
                           "train with train.snapshot_every: N to keep one every N steps")
    return points, note


def layer_means(doc: dict[str, Any]) -> dict[str, list[float | None]]:
    """Per layer of an ``attention.json`` document: the mean over heads of ``distance_px`` and ``entropy``
    (heads without a value left out; None if none has one), and ``head_kl_mean``."""

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None and not math.isnan(v)]
        return sum(kept) / len(kept) if kept else None

    layers = doc["layers"]
    return {"distance_px": [mean(layer["distance_px"]) for layer in layers],
            "entropy": [mean(layer["entropy"]) for layer in layers],
            "head_kl_mean": [layer["head_kl_mean"] for layer in layers]}


def attention_over_training(docs: list[dict[str, Any]], points: list[tuple[int, Path]], run: Path,
                            out: Path) -> dict[str, Any]:
    """``attention_over_training.json`` and its figure from the ``attention.json`` document of every point."""
    from mimlens.io import save_json
    from mimlens.report.figures_over_training import plot_attention_over_training

    means = [layer_means(doc) for doc in docs]
    summary = {"run": str(run), "model": docs[-1]["architecture"], "data": docs[-1]["data"],
               "num_images": docs[-1]["num_images"], "prefix_policy": docs[-1]["prefix_policy"],
               "layers": [layer["name"] for layer in docs[-1]["layers"]], "steps": [s for s, _ in points],
               "files": [str(p) for _, p in points],
               **{key: [m[key] for m in means] for key in ("distance_px", "entropy", "head_kl_mean")}}
    save_json(summary, out / "attention_over_training.json")
    plot_attention_over_training(summary, out / "figures" / "attention_over_training.png",
                                 title=f"{run.name}: attention over training")
    return summary


def _check(cfg: dict[str, Any]) -> Path:
    run = Path(cfg["model"]["spec"])
    if not run.is_dir() or cfg["model"]["arch"] is not None:
        raise MimlensError(f"every checkpoint: {run} must be a training run directory (and --arch is not used), "
                           "one with checkpoints/step_<N>.safetensors snapshots")
    if cfg["model"]["pretrained"] or cfg["model"]["encoder"] != "base":
        raise MimlensError("every checkpoint: a run's snapshots are its own weights; --pretrained and --encoder "
                           "are not used")
    return run


def analyze_over_training(cfg: dict[str, Any], out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Analyse every training point of the run ``cfg["model"]["spec"]`` (sections as for
    :func:`mimlens.analysis.run.analyze`) with every selected analysis and write ``out`` (rank 0); returns the
    summaries by analysis name (those with an ``over_training`` hook)."""
    from mimlens import distributed
    from mimlens.analysis.registry import MeasureContext
    from mimlens.analysis.run import (
        image_dataset,
        measure_documents,
        model_meta,
        progress_enabled,
        remove_stale,
        selected_analyses,
    )
    from mimlens.config import save_config
    from mimlens.data.folders import skipped_message
    from mimlens.io import save_json
    from mimlens.models import load_model, preprocessing

    entries = selected_analyses(cfg["analysis"])
    run = _check(cfg)
    device = distributed.init(cfg["run"]["device"])
    main, progress = distributed.is_main(), progress_enabled(cfg) and distributed.is_main()
    points, note = training_points(run)
    dataset, docs = None, []
    for step, path in points:
        model, info = load_model(run if path.parent == run else path)
        if dataset is None:
            dataset = image_dataset(cfg["data"], preprocessing(model)["img_size"])
            if main:
                log(f"analyze {run} at {len(points)} training steps ({', '.join(str(s) for s, _ in points)}) on "
                    f"{len(dataset)} images of {cfg['data']['source']}" + (f"; {note}" if note else ""))
        meta = model_meta(str(path), model, {**info, "step": step}, dataset, cfg["data"]["source"])
        ctx = MeasureContext(model.eval(), dataset, cfg["analysis"], device, progress, f"{run.name}-step_{step}")
        docs.append(measure_documents(entries, ctx, meta))
    summaries = {}
    message = skipped_message(dataset)  # a collective
    if main:
        if message:
            log(message)
        out.mkdir(parents=True, exist_ok=True)
        remove_stale(out, entries, over_training=True)
        save_config(cfg, out)
        for entry in entries:
            for (step, _), doc in zip(points, docs, strict=True):
                save_json(doc[entry.name], out / entry.name / f"step_{step}.json")
            hook = entry.function("over_training")
            if hook:
                summaries[entry.name] = hook([doc[entry.name] for doc in docs], points, run, out)
    distributed.barrier()
    return summaries
