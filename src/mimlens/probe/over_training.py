"""Attention statistics against training step: every backbone snapshot of a run, and its final backbone.

The points are the run's ``checkpoints/step_<N>.safetensors`` (:mod:`mimlens.models.snapshots`) and, once it has
finished, ``backbone.safetensors`` at the step of ``checkpoints/last.pt``. Each is analysed on the same raw images
(:mod:`mimlens.probe.inputs`) exactly as ``mimlens analyze`` analyses one model. Writes into ``out``:

- ``config.yaml``; ``attention/step_<N>.json``: each point's ``attention.json`` document (with its ``step``);
- ``attention_over_training.json``: ``run``, ``model``, ``data``, ``num_images``, ``prefix_policy``, ``layers``,
  ``steps`` (increasing), ``files`` (the weights of each step) and, per step and layer, the mean over heads of
  ``distance_px``, ``entropy`` and the layer's ``head_kl_mean`` (heads without a value left out; null if none);
- ``figures/attention_over_training.png``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mimlens.errors import MimlensError

__all__ = ["analyze_over_training", "layer_means", "training_points"]


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


def analyze_over_training(cfg: dict[str, Any], out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Analyse every training point of the run ``cfg["model"]["spec"]`` (sections as for
    :func:`mimlens.probe.analysis.analyze`) and write ``out`` (rank 0); returns the summary document."""
    from mimlens import distributed
    from mimlens.config import save_config
    from mimlens.data.folders import skipped_message
    from mimlens.io import save_json
    from mimlens.models import load_model, preprocessing
    from mimlens.probe.analysis import attention_document, attention_pass, image_dataset, progress_enabled, remove_stale
    from mimlens.report.figures_over_training import plot_attention_over_training

    run = Path(cfg["model"]["spec"])
    if not run.is_dir() or cfg["model"]["arch"] is not None:
        raise MimlensError(f"every checkpoint: {run} must be a training run directory (and --arch is not used), "
                           "one with checkpoints/step_<N>.safetensors snapshots")
    if cfg["model"]["pretrained"] or cfg["model"]["encoder"] != "base":
        raise MimlensError("every checkpoint: a run's snapshots are its own weights; --pretrained and --encoder "
                           "are not used")
    if cfg["analysis"]["cka"]:
        raise MimlensError("every checkpoint: CKA is not computed per checkpoint; analyse one checkpoint with --cka")
    device = distributed.init(cfg["run"]["device"])
    main, progress = distributed.is_main(), progress_enabled(cfg) and distributed.is_main()
    points, note = training_points(run)
    data, analysis = cfg["data"], cfg["analysis"]
    dataset, docs = None, []
    for step, path in points:
        model, info = load_model(run if path.parent == run else path)
        model.eval()
        if dataset is None:
            dataset = image_dataset(data, preprocessing(model)["img_size"])
            if main:
                log(f"analyze {run} at {len(points)} training steps ({', '.join(str(s) for s, _ in points)}) on "
                    f"{len(dataset)} images of {data['source']}" + (f"; {note}" if note else ""))
        stats = attention_pass(model, dataset, analysis, device, progress)
        docs.append(attention_document(stats, str(path), model, {**info, "step": step}, dataset, data["source"]))
    means = [layer_means(doc) for doc in docs]
    summary = {"run": str(run), "model": docs[-1]["architecture"], "data": data["source"],
               "num_images": docs[-1]["num_images"], "prefix_policy": analysis["prefix_policy"],
               "layers": [layer["name"] for layer in docs[-1]["layers"]], "steps": [s for s, _ in points],
               "files": [str(p) for _, p in points],
               **{key: [m[key] for m in means] for key in ("distance_px", "entropy", "head_kl_mean")}}
    if main:
        message = skipped_message(dataset)
        if message:
            log(message)
        out.mkdir(parents=True, exist_ok=True)
        remove_stale(out, ("over_training",))
        save_config(cfg, out)
        for (step, _), doc in zip(points, docs, strict=True):
            save_json(doc, out / "attention" / f"step_{step}.json")
        save_json(summary, out / "attention_over_training.json")
        plot_attention_over_training(summary, out / "figures" / "attention_over_training.png",
                                     title=f"{run.name}: attention over training")
    distributed.barrier()
    return summary
