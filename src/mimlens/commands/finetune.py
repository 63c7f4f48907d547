"""``mimlens finetune TASK``: transfer a backbone to a downstream task and evaluate it with the field's metric,
optionally with its last blocks dropped (``--drop-last K``) or for several K (``--sweep-drop 0,1,2,3``, the
paper's Figure 5). Runs on one CPU or GPU, or under ``torchrun`` (one process per device); rerunning the same
command resumes from ``RUN/checkpoints/last.pt``.

Flags override the ``--config`` YAML, which overrides the task's defaults (:mod:`mimlens.tasks.run`); the
resolved config is saved as ``RUN/config.yaml`` and the metrics, with the variant that produced them, as
``RUN/metrics.json``. The tasks and their help come from :data:`mimlens.tasks.registry.TASKS`.
"""

from __future__ import annotations

import argparse

from mimlens.commands.training import add_training_arguments, check_before_torch, config_value, training_flags
from mimlens.tasks.registry import TASKS

CLASSIFICATION = ("cls", "linear")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=list(TASKS), metavar="TASK",
                        help="; ".join(f"{t.name}: {t.help}" for t in TASKS.values()))
    parser.add_argument("--init", help="MODEL to start from: run directory, checkpoint file (with --arch), preset "
                                       "or timm:NAME (random init); default vit-tiny-64")
    parser.add_argument("--arch", help="the preset or timm model a checkpoint file belongs to")
    parser.add_argument("--data", help="synthetic[:N] (generated, default 2048 items) or a folder in the task's "
                                       "standard layout (see docs/finetune.md)")
    parser.add_argument("--out", help="run directory (default runs/finetune_<task>_<init>)")
    drop = parser.add_mutually_exclusive_group()
    drop.add_argument("--drop-last", type=int, help="remove the last K blocks before fine-tuning")
    drop.add_argument("--sweep-drop", help="comma-separated K values: one run each, drop_sweep.json and a figure")
    add_training_arguments(parser, steps_help="run length in optimizer updates (0: evaluate the start point)")
    parser.add_argument("--layer-decay", type=float, help="layer-wise lr decay (default 0.65 ViT, 0.9 Swin)")
    parser.add_argument("--num-eval", type=int, help="synthetic evaluation images (sequences for track)")
    parser.add_argument("--label", choices=("fine_label", "label"),
                        help="cls/linear on synthetic data: shape x texture (32 classes, default) or shape (8)")
    parser.add_argument("--probe-block", type=int,
                        help="linear: probe the output of this 0-based block, not the final one (Swin: counted "
                             "across stages, as probe --blocks)")
    parser.add_argument("--pool", choices=("cls", "avg"), help="linear: CLS token or mean of the patch tokens")


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


def task_flags(args: argparse.Namespace) -> dict:
    """Flags of one task's own section: ``--label`` (cls, linear), ``--probe-block`` and ``--pool`` (linear)."""
    from mimlens.errors import MimlensError

    given = {"label": args.label, "block": args.probe_block, "pool": args.pool}
    allowed = {"cls": ("label",), "linear": ("label", "block", "pool")}.get(args.task, ())
    wrong = [f"--{name.replace('block', 'probe-block')}" for name, value in given.items()
             if value is not None and name not in allowed]
    if wrong:
        raise MimlensError(f"{', '.join(wrong)} does not apply to task {args.task}")
    return {f"{args.task}.{name}": value for name, value in given.items() if name in allowed}


def run(args: argparse.Namespace) -> int:
    from mimlens.model_names import DEFAULT_PRESET

    init = str(config_value(args, args.init, "init") or DEFAULT_PRESET)
    out = check_before_torch(args, "finetune", f"finetune_{args.task}", init, config_value(args, args.arch, "arch"),
                             ("synthetic",))
    from mimlens import distributed
    from mimlens.tasks.run import finetune, resolve_config, result_line

    flags = {
        "task": args.task,
        "init": args.init,
        "arch": args.arch,
        "data.source": args.data,
        "data.num_eval": args.num_eval,
        **task_flags(args),
        "drop_last": args.drop_last,
        "sweep_drop": parse_sweep(args.sweep_drop),
        "optim.layer_decay": args.layer_decay,
        **training_flags(args),
    }
    cfg = resolve_config(args.config, flags)
    cfg["run"]["out"] = str(out)
    result = finetune(cfg, out)
    if not distributed.is_main():
        return 0
    if "stopped_at" in result:
        print(f"finetune {args.task} stopped at step {result['stopped_at']}/{result['total_steps']} (rerun the "
              f"command to resume): {out}")
    elif "rows" in result:
        values = ", ".join(f"K={r['drop_last']}: {r[result['metric']]:.4g}" for r in result["rows"])
        print(f"finetune {args.task} drop sweep ({result['metric']}): {values}: {out}")
    else:
        print(f"finetune {args.task}: {result_line(result)}: {out}")
    return 0
