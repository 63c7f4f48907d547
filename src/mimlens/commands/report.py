"""``mimlens report RUN_DIR...``: one self-contained HTML page from whatever the run directories hold.

Analysis runs, comparisons, masks runs, pre-training and fine-tuning runs, and directories of runs (a
demo) are recognised by their files; a demo directory gives the same page as the demo writes. The page
embeds every figure; the figures and numbers it shows are also placed next to it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (or directories of runs)")
    parser.add_argument("--out", metavar="DIR",
                        help="where report.html goes (default: the run directory itself when there is one, "
                             "else runs/report)")
    parser.add_argument("--title", help="the page title (default: the demo's for a demo directory, else "
                                        "'mimlens report')")


def run(args: argparse.Namespace) -> int:
    from mimlens.report.html import build_report

    if args.out is not None:
        out = Path(args.out)
    elif len(args.run_dirs) == 1:
        out = Path(args.run_dirs[0])
    else:
        out = Path("runs") / "report"
    path = build_report(args.run_dirs, out / "report.html", title=args.title)
    print(f"report: {path}")
    return 0
