"""``mimlens pretrain {simmim,supervised,moco}``: one pre-training run, on one CPU or under ``torchrun``.

Flags override the ``--config`` YAML, which overrides the defaults of :mod:`mimlens.pretrain.run`; the
resolved config is saved as ``RUN/config.yaml``. Rerunning the same command resumes from
``RUN/checkpoints/last.pt``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

OBJECTIVES = ("simmim", "supervised", "moco")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("objective", choices=OBJECTIVES, help="what to pre-train with")
    parser.add_argument("--arch", help="preset (e.g. vit-tiny-64, swin-tiny-64) or timm:NAME (default vit-tiny-64)")
    parser.add_argument("--data", help="synthetic[:N] (generated scenes, default 4096) or an image folder")
    parser.add_argument("--config", help="YAML recipe (see configs/); flags override it")
    parser.add_argument("--out", help="run directory (default runs/pretrain_<objective>_<arch>)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="run length in epochs")
    length.add_argument("--steps", type=int, help="run length in optimizer updates")
    parser.add_argument("--warmup-steps", type=int, help="linear warm-up length (default: the recipe's, else 5 %% "
                                                         "of the run)")
    parser.add_argument("--batch-size", type=int, help="global batch (all processes and accumulation steps)")
    parser.add_argument("--accum-steps", type=int, help="gradient-accumulation micro-batches per update")
    parser.add_argument("--lr", type=float, help="base learning rate for a batch of 256; lr = base × batch / 256")
    parser.add_argument("--img-size", type=int, help="input side in pixels (default: the model's)")
    parser.add_argument("--pos-embed", choices=("sincos", "learned"), help="ViT position embedding")
    parser.add_argument("--mask-ratio", type=float, help="SimMIM fraction of masked blocks")
    parser.add_argument("--mask-patch", type=int, help="SimMIM mask block side in pixels")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, help="data-loading worker processes per training process")
    parser.add_argument("--device", help="auto (default), cpu, cuda")
    parser.add_argument("--resume", help="checkpoint to resume from (default RUN/checkpoints/last.pt if present)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mimlens.data.spec import parse_data_spec

    if args.data is not None:  # before torch is imported: a typo costs no start-up time
        parse_data_spec(args.data)
    from mimlens import distributed
    from mimlens.pretrain.run import pretrain, resolve_config

    flags = {
        "objective": args.objective,
        "model.name": args.arch,
        "model.kwargs.img_size": args.img_size,
        "model.kwargs.pos_embed": args.pos_embed,
        "data.source": args.data,
        "train.epochs": args.epochs,
        "train.steps": args.steps,
        "train.seed": args.seed,
        "optim.warmup_steps": args.warmup_steps,
        "optim.batch_size": args.batch_size,
        "optim.accum_steps": args.accum_steps,
        "optim.base_lr": args.lr,
        "simmim.mask_ratio": args.mask_ratio,
        "simmim.mask_patch": args.mask_patch,
        "run.device": args.device,
        "run.num_workers": args.workers,
        "run.resume": args.resume,
        "run.out": args.out,
        "run.progress": False if args.no_progress else None,
    }
    cfg = resolve_config(args.config, flags)
    out = Path(cfg["run"]["out"] or Path("runs") / f"pretrain_{args.objective}_{_slug(cfg['model']['name'])}")
    cfg["run"]["out"] = str(out)
    try:
        summary = pretrain(cfg, out)
        main = distributed.is_main()
    finally:
        distributed.shutdown()
    if main:
        state = "finished" if summary["finished"] else "stopped (rerun the command to resume)"
        loss = f", loss {summary['loss']:.4f}" if summary["loss"] is not None else ""
        print(f"pretrain {args.objective} {state} at step {summary['step']}/{summary['total_steps']}{loss}: {out}")
    return 0


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name.removeprefix("timm:"))
