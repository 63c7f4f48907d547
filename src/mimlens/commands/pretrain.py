"""``mimlens pretrain OBJECTIVE`` (simmim, supervised, moco, or a registered one): one pre-training run, on
one CPU or under ``torchrun``.

Flags override the ``--config`` YAML, which overrides the defaults of :mod:`mimlens.pretrain.run`; the
resolved config is saved as ``RUN/config.yaml``. Rerunning the same command resumes from
``RUN/checkpoints/last.pt``.
"""

from __future__ import annotations

import argparse

from mimlens.commands.training import add_training_arguments, check_before_torch, config_value, training_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mimlens.pretrain.registry import OBJECTIVES

    parser.add_argument("objective", choices=tuple(OBJECTIVES), help="what to pre-train with")
    parser.add_argument("--arch", help="preset (e.g. vit-tiny-64, swin-tiny-64) or timm:NAME (default vit-tiny-64)")
    parser.add_argument("--data", help="synthetic[:N] (generated scenes, default 4096) or an image folder")
    parser.add_argument("--out", help="run directory (default runs/pretrain_<objective>_<arch>)")
    add_training_arguments(parser)
    parser.add_argument("--img-size", type=int, help="input side in pixels (default: the model's)")
    parser.add_argument("--pos-embed", choices=("sincos", "learned"), help="ViT position embedding")
    parser.add_argument("--mask-ratio", type=float, help="SimMIM fraction of masked blocks")
    parser.add_argument("--mask-patch", type=int, help="SimMIM mask block side in pixels")


def run(args: argparse.Namespace) -> int:
    from mimlens.model_names import DEFAULT_PRESET

    arch = config_value(args, args.arch, "model.name") or DEFAULT_PRESET
    out = check_before_torch(args, "pretrain", f"pretrain_{args.objective}", str(arch), None, ("synthetic", "photos"))
    from mimlens import distributed
    from mimlens.pretrain.run import pretrain, resolve_config

    flags = {
        "objective": args.objective,
        "model.name": args.arch,
        "model.kwargs.img_size": args.img_size,
        "model.kwargs.pos_embed": args.pos_embed,
        "data.source": args.data,
        **training_flags(args),
        "simmim.mask_ratio": args.mask_ratio,
        "simmim.mask_patch": args.mask_patch,
    }
    cfg = resolve_config(args.config, flags)
    cfg["run"]["out"] = str(out)
    summary = pretrain(cfg, out)
    if distributed.is_main():
        state = "finished" if summary["finished"] else "stopped (rerun the command to resume)"
        loss = f", loss {summary['loss']:.4f}" if summary["loss"] is not None else ""
        print(f"pretrain {args.objective} {state} at step {summary['step']}/{summary['total_steps']}{loss}: {out}")
    return 0
