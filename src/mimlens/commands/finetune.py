"""``mimlens finetune {cls,linear,depth,pose,track,det}``: transfer a backbone to a downstream task and evaluate
it with the field's metric, optionally with its last blocks dropped (``--drop-last K``) or for several K
(``--sweep-drop 0,1,2,3``, the paper's Figure 5).

Flags override the ``--config`` YAML, which overrides the defaults of :mod:`mimlens.tasks.run`; the resolved
config is saved as ``RUN/config.yaml`` and the metrics, with the variant that produced them, as
``RUN/metrics.json``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

TASKS = ("cls", "linear", "depth", "pose", "track", "det")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=TASKS,
                        help="cls (full fine-tune), linear (probe), depth, pose, track or det (COCO box AP)")
    parser.add_argument("--init", help="MODEL to start from: run directory, checkpoint file (with --arch), preset "
                                       "or timm:NAME (random init); default vit-tiny-64")
    parser.add_argument("--arch", help="the preset or timm model a checkpoint file belongs to")
    parser.add_argument("--data", help="synthetic[:N] (generated, default 2048 items) or a folder in the task's "
                                       "standard layout (see docs/finetune.md)")
    parser.add_argument("--config", help="YAML recipe; flags override it")
    parser.add_argument("--out", help="run directory (default runs/finetune_<task>_<init>)")
    drop = parser.add_mutually_exclusive_group()
    drop.add_argument("--drop-last", type=int, help="remove the last K blocks before fine-tuning")
    drop.add_argument("--sweep-drop", help="comma-separated K values: one run each, drop_sweep.json and a figure")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="run length in epochs")
    length.add_argument("--steps", type=int, help="run length in optimizer updates (0: evaluate the start point)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="base learning rate for a batch of 256; lr = base × batch / 256")
    parser.add_argument("--layer-decay", type=float, help="layer-wise lr decay (default 0.65 ViT, 0.9 Swin)")
    parser.add_argument("--num-eval", type=int, help="synthetic evaluation images (sequences for track)")
    parser.add_argument("--label", choices=("fine_label", "label"),
                        help="cls/linear on synthetic data: shape x texture (32 classes, default) or shape (8)")
    parser.add_argument("--probe-block", type=int,
                        help="linear: probe the output of this 0-based block (ViT) or stage (Swin), not the final one")
    parser.add_argument("--pool", choices=("cls", "avg"), help="linear: CLS token or mean of the patch tokens")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, help="data-loading worker processes")
    parser.add_argument("--device", help="auto (default), cpu, cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_sweep(text: str | None) -> list[int] | None:
    from mimlens.errors import MimlensError

    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MimlensError(f"--sweep-drop expects comma-separated integers such as 0,1,2,3, got {text!r}") from None
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise MimlensError(f"--sweep-drop expects distinct non-negative integers, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    if args.task == "det":
        from mimlens.tasks.detection_run import run_det

        return run_det(args)
    from mimlens.tasks.run import finetune, resolve_config

    flags = {
        "task": args.task,
        "init": args.init,
        "arch": args.arch,
        "data.source": args.data,
        "data.num_eval": args.num_eval,
        "cls.label": args.label,
        "linear.label": args.label,
        "linear.block": args.probe_block,
        "linear.pool": args.pool,
        "drop_last": args.drop_last,
        "sweep_drop": parse_sweep(args.sweep_drop),
        "train.epochs": args.epochs,
        "train.steps": args.steps,
        "train.seed": args.seed,
        "optim.batch_size": args.batch_size,
        "optim.base_lr": args.lr,
        "optim.layer_decay": args.layer_decay,
        "run.device": args.device,
        "run.num_workers": args.workers,
        "run.out": args.out,
        "run.progress": False if args.no_progress else None,
    }
    cfg = resolve_config(args.config, flags)
    out = Path(cfg["run"]["out"] or Path("runs") / f"finetune_{args.task}_{_slug(str(cfg['init']))}")
    cfg["run"]["out"] = str(out)
    result = finetune(cfg, out)
    if "rows" in result:
        values = ", ".join(f"K={r['drop_last']}: {r[result['metric']]:.4g}" for r in result["rows"])
        print(f"finetune {args.task} drop sweep ({result['metric']}): {values}: {out}")
    else:
        primary = result["primary"]
        print(f"finetune {args.task}: {primary['name']} {primary['value']:.4g} after {result['train']['steps']} "
              f"steps: {out}")
    return 0


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name.removeprefix("timm:")).name)
