"""``mimlens demo [--preset quick|default|gpu|masking|masking-quick] [--out DIR] [--fresh]``: pre-train SimMIM,
supervised and MoCo v3 from one initialisation, analyse, compare and fine-tune them, and write ``DIR/report.html``
with the paper's findings judged from the run's own numbers; the masking presets pre-train SimMIM once per masking
setting and judge F2. A rerun reuses finished stages; ``--fresh`` starts over.

The quick, default and gpu presets are the shipped studies ``demo-<preset>`` (``mimlens study demo-default --out
runs/demo-default`` runs the same stages); the masking presets run the masking study's own pipeline
(:mod:`mimlens.demo.masking`).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

PRESET_NAMES = ("quick", "default", "gpu", "masking", "masking-quick")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESET_NAMES, default="default",
                        help="quick (smoke run, ~1 min, claims no finding), default (~60 min on a 2-core CPU), "
                             "gpu (a larger recipe for one GPU), masking (the masking study for F2, ~60 min on a "
                             "2-core CPU) or masking-quick (its smoke run); default: %(default)s")
    parser.add_argument("--out", metavar="DIR", help="demo directory (default runs/demo-<preset>; a masking study: "
                                                     "runs/demo-default/masking, inside the default demo's, whose "
                                                     "F2 row then reports it; masking-quick: runs/demo-quick/masking)")
    parser.add_argument("--fresh", action="store_true", help="delete the demo directory's earlier stages first")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the preset's: cuda for gpu, cpu for quick and "
                                         "default; cuda when available for the masking presets)")
    parser.add_argument("--parallel", type=int, metavar="N",
                        help="stages run at once, each in its own process (default: the preset's; 1 = in turn)")


def run(args: argparse.Namespace) -> int:
    from mimlens.demo.presets import get_preset
    from mimlens.errors import MimlensError
    from mimlens.findings.folder import MASKING_FOLDER
    from mimlens.rundir import check_out

    preset = get_preset(args.preset)
    default_out = f"runs/demo-{preset.joins}/{MASKING_FOLDER}" if preset.joins else f"runs/demo-{preset.name}"
    out = Path(args.out or default_out)
    if args.parallel is not None and args.parallel < 1:
        raise MimlensError(f"--parallel {args.parallel}: expected at least 1 (stages run at once)")
    if preset.mask_settings:
        check_out(out, "demo")  # before torch is imported; run_demo checks again, for its other callers
        from mimlens.demo.pipeline import run_demo

        run_demo(preset, out, fresh=args.fresh, device=args.device, parallel=args.parallel)
        return 0
    return run_study_preset(preset.name, out, args.fresh, args.device, args.parallel)


def run_study_preset(name: str, out: Path, fresh: bool, device: str | None, parallel: int | None) -> int:
    """The shipped study ``demo-<name>`` into ``out``, with ``--device`` and ``--parallel`` over its launch."""
    from dataclasses import replace

    from mimlens.errors import MimlensError
    from mimlens.rundir import check_out, check_writable, run_kind
    from mimlens.study.session import run_study
    from mimlens.study.spec import load_study, study_file

    study = load_study(study_file(f"demo-{name}"))
    launch = {**study.launch, **({"device": device} if device else {}), **({"parallel": parallel} if parallel else {})}
    kind = run_kind(out) if out.is_dir() else None
    if kind not in ("study", "demo"):
        check_out(out, "demo")  # a file, a folder holding another kind of run, or one that cannot be written
    if kind is None and out.is_dir() and any(out.iterdir()):
        raise MimlensError(f"{out} exists and is not a demo directory (no {out / 'config.yaml'} of a study): "
                           "choose another --out")
    if fresh and out.is_dir():
        shutil.rmtree(out)
    check_writable(out)
    return run_study(replace(study, launch=launch), out)
