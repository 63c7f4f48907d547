"""``mimlens study STUDY [--out DIR] [--plan] [--only STAGE]``: the paper's study — analyses, probes,
fine-tunings and the findings judged by role — on the models and data a study file names (see
:mod:`mimlens.study.spec`), each stage a child process, finished stages reused on a rerun. STUDY is a study file
or the name of a shipped one (``paper-vit-b``, ``demo-default``, ...: :func:`mimlens.study.spec.study_file`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY", help="a study file (models with roles, data, launch), or a shipped "
                                                       "study's name: paper-vit-b, paper-swinv2, demo-quick, "
                                                       "demo-default, demo-gpu")
    parser.add_argument("--out", metavar="DIR", help="study directory (default runs/study-<file name>)")
    parser.add_argument("--plan", action="store_true",
                        help="print the stages, which are reused, and the paths that are missing; run nothing")
    parser.add_argument("--only", metavar="STAGE", help="run this stage and the stages it needs, nothing else")


def run(args: argparse.Namespace) -> int:
    from mimlens.rundir import check_out
    from mimlens.study.spec import load_study, study_file

    study = load_study(study_file(args.study))
    out = Path(args.out or Path("runs") / f"study-{Path(args.study).stem}")
    check_out(out, "study")
    from mimlens.study.session import plan_study, run_study

    if args.plan:
        print("\n".join(plan_study(study, out)))
        return 0
    return run_study(study, out, only=args.only)
