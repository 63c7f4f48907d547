"""``mimlens demo [--preset quick|default|gpu|masking|masking-quick] [--out DIR] [--fresh]``: pre-train SimMIM,
supervised and MoCo v3 from one initialisation, analyse, compare and fine-tune them, and write ``DIR/report.html``
with the paper's findings judged from the run's own numbers; the masking presets pre-train SimMIM once per masking
setting and judge F2. A rerun reuses finished stages; ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PRESET_NAMES = ("quick", "default", "gpu", "masking", "masking-quick")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESET_NAMES, default="default",
                        help="quick (smoke run, ~2 min, claims no finding), default (~60 min on a 2-core CPU), "
                             "gpu (a larger recipe for one GPU), masking (the masking study for F2, ~60 min on a "
                             "2-core CPU) or masking-quick (its smoke run); default: %(default)s")
    parser.add_argument("--out", metavar="DIR", help="demo directory (default runs/demo-<preset>; a masking study: "
                                                     "runs/demo-default/masking, inside the default demo's, whose "
                                                     "F2 row then reports it; masking-quick: runs/demo-quick/masking)")
    parser.add_argument("--fresh", action="store_true", help="delete the demo directory's earlier stages first")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--parallel", type=int, metavar="N",
                        help="stages run at once, each in its own process (default: the preset's; 1 = in turn)")


def run(args: argparse.Namespace) -> int:
    from mimlens.demo.presets import get_preset
    from mimlens.findings.folder import MASKING_FOLDER
    from mimlens.rundir import check_out

    preset = get_preset(args.preset)
    default_out = f"runs/demo-{preset.joins}/{MASKING_FOLDER}" if preset.joins else f"runs/demo-{preset.name}"
    out = Path(args.out or default_out)
    check_out(out, "demo")  # before torch is imported; run_demo checks again, for its other callers
    from mimlens.demo.pipeline import run_demo

    run_demo(preset, out, fresh=args.fresh, device=args.device, parallel=args.parallel)
    return 0
