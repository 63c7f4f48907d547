"""The flags every training command shares (``pretrain``, ``finetune``): the engine's ``optim``, ``train`` and
``run`` settings, which keep the same names and meaning in both (``mimlens.engine.settings``)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def add_training_arguments(parser: argparse.ArgumentParser, steps_help: str = "run length in optimizer updates"):
    parser.add_argument("--config", help="YAML recipe (see configs/); flags override it")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="run length in epochs")
    length.add_argument("--steps", type=int, help=steps_help)
    parser.add_argument("--warmup-steps", type=int, help="linear warm-up length (default: the recipe's, else 5 %% "
                                                         "of the run)")
    parser.add_argument("--batch-size", type=int, help="global batch (all processes and accumulation steps)")
    parser.add_argument("--accum-steps", type=int, help="gradient-accumulation micro-batches per update")
    parser.add_argument("--lr", type=float, help="base learning rate for a batch of 256; lr = base × batch / 256")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, help="data-loading worker processes per training process")
    parser.add_argument("--device", help="auto (default), cpu, cuda")
    parser.add_argument("--resume", help="checkpoint to resume from (default RUN/checkpoints/last.pt if present)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")


def training_flags(args: argparse.Namespace) -> dict:
    """The dotted config keys of :func:`add_training_arguments`'s flags (None: not given)."""
    return {
        "train.epochs": args.epochs,
        "train.steps": args.steps,
        "train.seed": args.seed,
        "optim.warmup_steps": args.warmup_steps,
        "optim.batch_size": args.batch_size,
        "optim.accum_steps": args.accum_steps,
        "optim.base_lr": args.lr,
        "run.device": args.device,
        "run.num_workers": args.workers,
        "run.resume": args.resume,
        "run.out": args.out,
        "run.progress": False if args.no_progress else None,
    }


def default_out(command: str, name: str) -> Path:
    """``runs/<command>_<name>``, the name made path-safe (``timm:`` and folders dropped)."""
    return Path("runs") / f"{command}_{re.sub(r'[^A-Za-z0-9_.-]+', '-', Path(name.removeprefix('timm:')).name)}"


def config_value(args: argparse.Namespace, given, dotted: str):
    """A flag's value, else the ``--config`` YAML's at ``dotted`` (None when neither sets it)."""
    from mimlens.config import load_yaml

    if given is not None or args.config is None:
        return given
    node = load_yaml(args.config)
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def check_before_torch(args: argparse.Namespace, kind: str, name: str, model: str, arch: str | None,
                       generated: tuple[str, ...]) -> Path:
    """What a training command checks before torch is imported, so that a typo costs no start-up time: the data
    spec, the MODEL spelling, the ``--resume`` file and the run directory ``kind`` writes (returned: ``--out``, else
    ``runs/<name>_<model>``)."""
    from mimlens.data.spec import parse_data_spec
    from mimlens.errors import MimlensError
    from mimlens.model_names import check_model_spelling
    from mimlens.rundir import check_out

    data = config_value(args, args.data, "data.source")
    if data is not None:
        parse_data_spec(str(data), generated=generated)
    check_model_spelling(model, arch)
    resume = config_value(args, args.resume, "run.resume")
    if resume is not None and not Path(resume).is_file():
        raise MimlensError(f"--resume {resume}: no such checkpoint file")
    out = Path(config_value(args, args.out, "run.out") or default_out(name, model))
    check_out(out, kind)
    return out
