"""A demo preset run twice, by the demo's former in-process pipeline (``mimlens.demo.pipeline.run_demo``: stages in
worker processes of one Python process) and by ``mimlens demo --preset P``, which runs the shipped study
``demo-P`` through the study runner (a pool of worker processes): the wall time of each and their ratio, and
whether every stage file holds the same numbers.

    python benchmarks/demo_as_study.py                      # the quick preset, in a temporary folder
    python benchmarks/demo_as_study.py --preset default --keep runs/demo-vs-study

Compared: every JSON document and safetensors file the stages write (pre-trainings, analyses, comparison,
AvgDist, probes, fine-tunings), the training bars and the findings rows. Paths inside them are compared after
replacing each run's folder by ``OUT`` (the study's random initialisation lives in ``weights/``, the demo's in
``pretrain/``); timings and checkpoints are left out. Both runs use the preset's stages at once and threads.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE_FOLDERS = ("pretrain", "analysis", "compare", "masks", "probe", "finetune")
SKIPPED_KEYS = ("seconds", "started_at", "finished_at", "images_per_second")


def run(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def differences(x, y, roots: tuple[Path, Path], path: str = "") -> list[str]:
    """Where two JSON values differ (paths under the two run folders compared as ``OUT/...``)."""
    if isinstance(x, dict) and isinstance(y, dict):
        keys = [k for k in set(x) | set(y) if not any(s in str(k) for s in SKIPPED_KEYS)]
        return [d for k in keys for d in (differences(x[k], y[k], roots, f"{path}/{k}") if k in x and k in y
                                          else [f"{path}/{k}: missing"])]
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        return [d for i, (p, q) in enumerate(zip(x, y, strict=True)) for d in differences(p, q, roots, f"{path}[{i}]")]
    if isinstance(x, str) and isinstance(y, str):
        same = x.replace(str(roots[0]), "OUT") == y.replace(str(roots[1]), "OUT").replace(
            "OUT/weights/random_init", "OUT/pretrain/random_init")
        return [] if same else [f"{path}: {x!r} != {y!r}"]
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return []
    return [] if x == y else [f"{path}: {x!r} != {y!r}"]


def same_tensors(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    return set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x)


def compare(demo: Path, study: Path) -> tuple[int, list[str]]:
    """(files compared, one line per file that differs)."""
    files, problems = 0, []
    for folder in STAGE_FOLDERS:
        for path in sorted((demo / folder).rglob("*")):
            rel = str(path.relative_to(demo))
            if path.suffix not in (".json", ".safetensors") or "checkpoints" in path.parts:
                continue
            other = study / rel.replace("pretrain/random_init", "weights/random_init")
            files += 1
            if not other.is_file():
                problems.append(f"{rel}: missing in the study's folder")
            elif path.suffix == ".safetensors":
                problems += [] if same_tensors(path, other) else [f"{rel}: tensors differ"]
            else:
                found = differences(json.loads(path.read_text()), json.loads(other.read_text()), (demo, study))
                problems += [f"{rel}: {d}" for d in found[:3]]
    for name in ("bars.json",):
        files += 1
        if json.loads((demo / name).read_text()) != json.loads((study / name).read_text()):
            problems.append(f"{name} differs")
    rows = [json.loads((d / "findings.json").read_text())["findings"] for d in (demo, study)]
    files += 1
    problems += [f"findings.json: {d}" for d in differences(rows[0], rows[1], (demo, study), "/findings")]
    return files, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", choices=("quick", "default"))
    parser.add_argument("--keep", type=Path, help="folder to keep both runs in (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = args.keep or Path(scratch)
        demo, study = base / "demo", base / "study"
        demo_seconds = run(["-c", "import sys; from mimlens.demo.pipeline import run_demo; "
                                  "from mimlens.demo.presets import get_preset; "
                                  "run_demo(get_preset(sys.argv[1]), sys.argv[2])", args.preset, str(demo)])
        study_seconds = run(["-m", "mimlens", "demo", "--preset", args.preset, "--out", str(study)])
        files, problems = compare(demo, study)
    print(f"preset {args.preset}: former pipeline {demo_seconds:.1f} s, mimlens demo (study runner) "
          f"{study_seconds:.1f} s, ratio {study_seconds / demo_seconds:.2f}")
    print(f"{files - len({p.split(':')[0] for p in problems})} of {files} files hold the same numbers")
    for line in problems:
        print("  " + line)


if __name__ == "__main__":
    main()
