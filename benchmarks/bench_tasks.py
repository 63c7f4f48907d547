"""The closing-note table: each downstream task fine-tuned from a SimMIM, a supervised and a random backbone.

For every task (cls, linear, depth, pose, track) and every starting point, one ``mimlens finetune`` run on
synthetic data with the tiny CPU recipe below; prints the task's primary metric (with its variant in the run's
``metrics.json``) and the wall time of the run (training + evaluation), and writes ``bench_tasks.json``.
The pre-trained starting points are run directories from ``mimlens pretrain`` (same preset as ``--arch``);
the random one is the preset itself. Timings depend on the machine and its load: compare rows of one run.

    mimlens pretrain simmim --arch vit-tiny-64 --out runs/simmim
    mimlens pretrain supervised --arch vit-tiny-64 --out runs/supervised
    python benchmarks/bench_tasks.py --simmim runs/simmim --supervised runs/supervised --out runs/bench_tasks
    python benchmarks/bench_tasks.py --tasks depth,pose --steps 50      # random init only, two tasks
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

TASKS = ("cls", "linear", "depth", "pose", "track")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simmim", help="run directory of a SimMIM pre-training")
    parser.add_argument("--supervised", help="run directory of a supervised pre-training")
    parser.add_argument("--arch", default="vit-tiny-64", help="preset of the random baseline (and of the runs)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--data", default="synthetic:1024", help="training data of every run")
    parser.add_argument("--num-eval", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="runs/bench_tasks")
    args = parser.parse_args()

    from mimlens.cli import main as mimlens

    inits = {"simmim": args.simmim, "supervised": args.supervised, "random": args.arch}
    inits = {name: spec for name, spec in inits.items() if spec}
    rows = []
    for task in args.tasks.split(","):
        for name, spec in inits.items():
            out = Path(args.out) / f"{task}_{name}"
            start = time.perf_counter()
            status = mimlens(["finetune", task, "--init", spec, "--data", args.data, "--num-eval", str(args.num_eval),
                              "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--out", str(out),
                              "--no-progress"])
            seconds = time.perf_counter() - start
            if status != 0:
                rows.append({"task": task, "init": name, "error": f"exit status {status}"})
                continue
            result = json.loads((out / "metrics.json").read_text())
            primary = result["primary"]
            rows.append({"task": task, "init": name, "metric": primary["name"], "value": primary["value"],
                         "higher_is_better": primary["higher_is_better"], "wall_s": round(seconds, 1),
                         "train_s": result["train"]["seconds"], "run": str(out)})
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bench_tasks.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"| task | start | metric | value | wall time (s) |   ({args.data}, {args.steps} steps, batch "
          f"{args.batch_size}, {args.num_eval} eval items)")
    print("|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['task']} | {row['init']} | {row['error']} | | |")
        else:
            arrow = "↑" if row["higher_is_better"] else "↓"
            print(f"| {row['task']} | {row['init']} | {row['metric']} {arrow} | {row['value']:.4f} | {row['wall_s']} |")


if __name__ == "__main__":
    main()
