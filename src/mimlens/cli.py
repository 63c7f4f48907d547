"""The ``mimlens`` command line: one sub-command per job, each in ``mimlens.commands.<name>``.

A command module defines ``add_arguments(parser)`` and ``run(args) -> int``; this file only wires them
up and turns :class:`~mimlens.errors.MimlensError` into a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mimlens import __version__
from mimlens.errors import Interrupted, MimlensError
from mimlens.tasks.registry import TASKS

COMMANDS = {
    "analyze": "attention statistics (and CKA with --cka) of one model",
    "compare": "side-by-side figures and cross-model CKA of two or more models or runs",
    "masks": "AvgDist of SimMIM masking settings",
    "probe": "layer-wise frozen probes (classification, depth, keypoints, tracking) of every block",
    "pretrain": "pre-train with SimMIM, supervised classification or MoCo v3",
    "finetune": f"transfer a backbone to a downstream task ({', '.join(TASKS)})",
    "study": "the paper's study on any models and data: analyses, probes, fine-tunings, findings by role",
    "demo": "the paper's whole pipeline at tiny scale, with a report",
    "report": "build the HTML report of one or more run directories",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimlens", description="Look inside, pre-train and transfer Vision Transformers."
    )
    parser.add_argument("--version", action="version", version=f"mimlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        try:
            module = importlib.import_module(f"mimlens.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"mimlens.commands.{name}":
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except Interrupted as err:
        print(f"mimlens {args.command}: {err}", file=sys.stderr)
        return err.status
    except MimlensError as err:
        print(f"mimlens {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mimlens {args.command}: interrupted; files already written are complete, and a rerun "
              "resumes from the last checkpoint where there is one", file=sys.stderr)
        return 130
