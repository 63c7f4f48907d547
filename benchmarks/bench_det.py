"""Box AP on the synthetic scenes after detection fine-tuning from differently pre-trained backbones.

Each ``--run LABEL=MODEL`` (a ``mimlens pretrain`` run directory, or a preset for random init) is
fine-tuned with the same detection recipe (``mimlens finetune det`` defaults, overridden by ``--config`` and
the flags below) and evaluated with pycocotools on the same validation scenes. ``--random`` adds a randomly
initialised backbone of the first run's architecture. Printed: AP, AP50, AP75, APs, APm (fractions in
[0, 1]), wall time and seconds per step; written under ``--out``: ``<label>/`` runs, ``bench_det.json``,
``figures/det_ap.png`` (AP and AP50 per backbone) and ``figures/det_loss_curves.png`` (classification vs
box-regression losses of every run).

    mimlens pretrain simmim --arch vit-tiny-64 --steps 2800 --out runs/simmim
    mimlens pretrain supervised --arch vit-tiny-64 --steps 2800 --out runs/supervised
    python benchmarks/bench_det.py --run simmim=runs/simmim --run supervised=runs/supervised --random \\
        --steps 600 --out runs/bench_det
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import sys
import time
from pathlib import Path

COLUMNS = ("ap", "ap50", "ap75", "ap_small", "ap_medium")


def parse_runs(values: list[str]) -> list[tuple[str, str]]:
    runs = []
    for value in values:
        label, sep, model = value.partition("=")
        if not sep or not label or not model:
            sys.exit(f"--run expects LABEL=MODEL, got {value!r}")
        runs.append((label, model))
    return runs


def random_twin(model: str) -> tuple[str, dict]:
    """(preset or timm name, build kwargs) of a run directory's architecture, or of a preset itself."""
    from mimlens.config import load_yaml

    path = Path(model)
    if path.is_dir():
        section = load_yaml(path / "config.yaml")["model"]
        return section["name"], dict(section.get("kwargs") or {})
    return model, {}


def bar_figure(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    from mimlens.io import save_bytes

    figure = Figure(figsize=(5.6, 3.6))
    axes = figure.add_subplot()
    width = 0.38
    xs = range(len(rows))
    for offset, name in ((-width / 2, "ap"), (width / 2, "ap50")):
        bars = axes.bar([x + offset for x in xs], [r[name] for r in rows], width, label=name.upper())
        axes.bar_label(bars, fmt="%.3f", fontsize=7)
    axes.set_ylim(0, max(0.05, 1.15 * max(r["ap50"] for r in rows)))
    axes.set_xticks(list(xs), [r["label"] for r in rows])
    axes.set_ylabel("box AP (COCOeval bbox, maxDets 100)")
    axes.set_title("detection fine-tuning on synthetic scenes", fontsize=10)
    axes.legend(fontsize=8, frameon=False)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    save_bytes(buffer.getvalue(), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", default=[], metavar="LABEL=MODEL",
                        help="a backbone to fine-tune: run directory or preset (repeatable)")
    parser.add_argument("--random", action="store_true", help="add a random-init backbone of the first run's arch")
    parser.add_argument("--config", help="detection YAML recipe shared by every run")
    parser.add_argument("--data", default=None, help="synthetic[:N] (default synthetic:2048) or a COCO folder")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning updates per run")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="base lr for a batch of 256")
    parser.add_argument("--num-eval", type=int, default=None, help="synthetic validation scenes (default 256)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="runs/bench_det")
    args = parser.parse_args(argv)

    from mimlens.tasks.detection_figures import loss_curves
    from mimlens.tasks.run import finetune, resolve_config

    runs = parse_runs(args.run)
    if not runs:
        sys.exit("give at least one --run LABEL=MODEL")
    if args.random:
        runs.append(("random", "random"))
    base = resolve_config(args.config, {
        "task": "det", "data.source": args.data, "data.num_eval": args.num_eval, "train.steps": args.steps,
        "optim.batch_size": args.batch_size, "optim.base_lr": args.lr, "run.device": args.device,
        "run.progress": False})
    out = Path(args.out)
    rows = []
    for label, model in runs:
        cfg = copy.deepcopy(base)
        if model == "random":
            cfg["init"], kwargs = random_twin(runs[0][1])
            cfg["model"]["kwargs"] = {**kwargs, **cfg["model"]["kwargs"]}
        else:
            cfg["init"] = model
        cfg["run"]["out"] = str(out / label)
        start = time.perf_counter()
        result = finetune(cfg, out / label)
        wall = time.perf_counter() - start
        steps = max(1, result["train"]["steps"])
        rows.append({"label": label, "init": cfg["init"], **{k: result["metrics"][k] for k in COLUMNS},
                     "wall_s": round(wall, 1), "train_s_per_step": round(result["train"]["seconds"] / steps, 3)})
        print(json.dumps(rows[-1]), flush=True)

    header = f"{'backbone':<12}" + "".join(f"{c:>10}" for c in COLUMNS) + f"{'wall s':>9}{'s/step':>8}"
    print(header)
    for r in rows:
        cells = "".join(f"{r[c]:>10.4f}" if r[c] is not None else f"{'-':>10}" for c in COLUMNS)
        print(f"{r['label']:<12}{cells}{r['wall_s']:>9.1f}{r['train_s_per_step']:>8.3f}")
    from mimlens.io import save_json

    save_json({"variant": "COCOeval bbox, maxDets 100, area ranges COCO default", "rows": rows},
              out / "bench_det.json")
    bar_figure(rows, out / "figures" / "det_ap.png")
    loss_curves([out / label for label, _ in runs], out / "figures" / "det_loss_curves.png",
                labels=[label for label, _ in runs])
    print(f"figures: {out / 'figures' / 'det_ap.png'}, {out / 'figures' / 'det_loss_curves.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
