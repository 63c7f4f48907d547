"""GPU-hour estimates for ``mimlens study --plan``: the images a stage pushes through its backbone, divided by a
published throughput of the same backbone on one GPU.

The throughputs are timm's own benchmark tables, measured on one RTX 3090 with AMP (PyTorch 1.12, CUDA 11.3):
``results/benchmark-infer-amp-nchw-pt112-cu113-rtx3090.csv`` for forward passes (analyses) and
``results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv`` for training steps (forward, backward, optimiser).
A model at another image size is scaled by its number of pixels. What is left out, so the estimates are lower
bounds: task heads and decoders (the depth decoder, the pose head, Faster R-CNN), evaluation passes, data
loading, and the attention capture's extra work. GPU-hours do not depend on the number of GPUs; the wall time on
``processes`` GPUs is GPU-hours / processes when the stage scales linearly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mimlens.model_names import PRESETS
from mimlens.study.spec import ModelSpec, Study
from mimlens.study.stages import StudyStage

DEVICE = "one RTX 3090, AMP"
SOURCE = "timm results/benchmark-{infer,train}-amp-nchw-pt112-cu113-rtx3090.csv"


@dataclass(frozen=True)
class Throughput:
    """Images per second of timm's ``model`` at ``img_size`` px: forward only (``infer``) and training."""

    model: str
    img_size: int
    infer: float
    train: float


#: timm model-name prefix -> its row in both tables (the ViT-B/16 rows also serve DeiT-B, the same network).
THROUGHPUTS: dict[str, Throughput] = {
    "vit_base_patch16": Throughput("vit_base_patch16_224", 224, 1132.21, 390.86),
    "deit_base_patch16": Throughput("vit_base_patch16_224", 224, 1132.21, 390.86),
    "beit_base_patch16": Throughput("beit_base_patch16_224", 224, 1045.12, 358.29),
    "swinv2_base": Throughput("swinv2_base_window8_256", 256, 507.32, 150.28),
}

#: Training items of the datasets the shipped recipes were written for, used when a recipe counts epochs.
TRAIN_ITEMS: dict[str, tuple[int, str]] = {
    "depth": (24231, "NYUv2 on the BTS training list"),
    "pose": (149813, "COCO-2017 train person instances"),
    "cls": (5994, "CUB-200-2011 train"),
}


@dataclass(frozen=True)
class Cost:
    """``gpu_hours`` (None: no estimate) and how it was obtained, in words."""

    gpu_hours: float | None
    basis: str

    def __str__(self) -> str:
        return self.basis if self.gpu_hours is None else f"≈ {self.gpu_hours:.3g} GPU-h: {self.basis}"


def timm_name_and_size(model: ModelSpec) -> tuple[str, int] | None:
    """The timm model name and image size (px) of a study's model, from its preset or ``timm:`` name (None for
    a pre-training the study runs or an unnamed architecture)."""
    spelling = model.arch or model.source or ""
    if spelling in PRESETS:
        preset = PRESETS[spelling]
        return None if preset.img_size is None else (preset.timm_name, preset.img_size)
    if spelling.startswith("timm:"):
        name = spelling[5:].split(".")[0]
        size = re.search(r"_(\d+)$", name)
        return (name, int(size.group(1))) if size else None
    return None


def throughput(model: ModelSpec) -> tuple[Throughput, float] | None:
    """The table row for ``model`` and the factor its rates are multiplied by (pixels of the row ÷ the
    model's), or None where the table has no row."""
    found = timm_name_and_size(model)
    if found is None:
        return None
    name, size = found
    row = next((row for prefix, row in THROUGHPUTS.items() if name.startswith(prefix)), None)
    return None if row is None else (row, (row.img_size / size) ** 2)


def _work(stage: StudyStage, study: Study) -> tuple[list[tuple[ModelSpec, int]], str, str] | str:
    """([(model, images through its backbone)], "infer" or "train", in words), or why there is no count."""
    analysis = study.analysis or {}
    num_images = int(analysis.get("num_images", 64))
    if stage.kind == "analyze":
        passes = len(analysis.get("names", ["attention", "cka"]))
        return [(study.model(stage.model), passes * num_images)], "infer", f"{passes} passes over {num_images} images"
    if stage.kind == "compare":
        others = len(study.models) - 1
        return ([(m, others * num_images) for m in study.models], "infer",
                f"each model against {others} other(s) over {num_images} images")
    if stage.kind.startswith("finetune_"):
        images = _finetune_images(stage, study)
        return images if isinstance(images, str) else ([(study.model(stage.model), images[0])], "train", images[1])
    return f"no estimate for a {stage.kind} stage"


def _finetune_images(stage: StudyStage, study: Study) -> tuple[int, str] | str:
    task = stage.kind.removeprefix("finetune_")
    cfg = stage.config or {}
    batch = (cfg.get("optim") or {}).get("batch_size")
    train = cfg.get("train") or {}
    if batch is None or (train.get("steps") is None and train.get("epochs") is None):
        return "no estimate: the recipe gives no batch size and length"
    if train.get("steps") is not None:
        steps, words = int(train["steps"]), f"{train['steps']} steps × batch {batch}"
    elif task in TRAIN_ITEMS:
        items, dataset = TRAIN_ITEMS[task]
        steps = int(train["epochs"]) * math.ceil(items / batch)
        words = f"{train['epochs']} epochs of {items} items ({dataset}) at batch {batch}"
    else:
        return f"no estimate: the recipe counts epochs and the size of a {task} training set is not known"
    runs = 1
    if "--sweep-drop" in (stage.argv or []):
        runs = len(next(s for s in study.finetune if s.task == task).drop_last)
        words += f", {runs} runs (drop sweep)"
    return runs * steps * int(batch), words


def stage_cost(stage: StudyStage, study: Study) -> Cost:
    """The GPU-hour estimate of one stage (in-process stages cost nothing on a GPU)."""
    if stage.call is not None:
        return Cost(0.0, "in process")
    work = _work(stage, study)
    if isinstance(work, str):
        return Cost(None, work)
    counts, mode, words = work
    hours, rates = 0.0, []
    for model, count in counts:
        found = throughput(model)
        if found is None:
            return Cost(None, f"no published throughput of {model.name}'s backbone in the table")
        row, factor = found
        rate = getattr(row, mode) * factor
        hours += count / rate / 3600
        scaled = f" scaled by pixels from {row.img_size} px" if factor != 1 else ""
        rates.append(f"{rate:.0f} img/s ({row.model}{scaled})")
    return Cost(hours, f"{words}; {mode} rate {', '.join(dict.fromkeys(rates))}")
