"""Fine-tuning on the engine: its images/s ÷ those of the one-process loop fine-tuning had before it moved
onto the engine, on the default demo's depth fine-tuning (vit-tiny-64 with sin-cos position embedding, batch 32,
the demo's synthetic scenes, layer-wise lr decay 0.65).

The baseline restates that loop: the engine's data order (``build_loader``), AdamW over the objective's
layer-decay groups, timm's warm-up + cosine stepped per update, gradient clipping at 5, the loss read back every
step — and nothing else (no process group, checkpoints, RNG bookkeeping or log file). Both time every step after
``--warmup`` (the engine from its own ``log.jsonl``, written every step; the baseline with ``perf_counter``
around the same work); images/s is the batch ÷ the median step time. Runs alternate and the median ratio is
printed; target ≥ 0.95.

    python benchmarks/bench_finetune.py                 # CPU, both threads
    python benchmarks/bench_finetune.py --threads 1     # as the demo runs it, two stages side by side
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

DIFFICULTY = {"num_objects": [1, 2], "background_strength": 0.5}


def setup(cfg):
    from mimlens.models import load_model, preprocessing
    from mimlens.tasks.setups import setup_depth

    torch.manual_seed(0)
    encoder, _ = load_model("vit-tiny-64", None, pos_embed="sincos")
    return setup_depth(cfg, encoder, preprocessing(encoder), Path(tempfile.gettempdir()))


def run_engine(cfg, warmup: int) -> float:
    from mimlens.engine import train

    task = setup(cfg)
    with tempfile.TemporaryDirectory() as run_dir:
        train(task.objective, task.train_set, task.transform, copy.deepcopy(cfg), run_dir)
        lines = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]
    return statistics.median(r["images_per_s"] for r in lines if "images_per_s" in r and r["step"] > warmup)


def run_plain_loop(cfg, warmup: int) -> float:
    from mimlens.engine import build_loader, build_optimizer, build_scheduler

    task = setup(cfg)
    optim, steps = cfg["optim"], int(cfg["train"]["steps"])
    batch = int(optim["batch_size"])
    objective = task.objective.train()
    loader, sampler = build_loader(task.train_set, task.transform, batch_size=batch, num_replicas=1, rank=0, seed=0)
    optimizer = build_optimizer(objective, lr=optim["base_lr"] * batch / 256, weight_decay=optim["weight_decay"],
                                layer_decay=optim["layer_decay"])
    params = [p for g in optimizer.param_groups for p in g["params"]]
    scheduler = build_scheduler(optimizer, total_steps=steps, warmup_steps=int(optim["warmup_steps"]),
                                min_lr=1e-6, warmup_lr=1e-6)
    times, step, start = [], 0, time.perf_counter()
    while step < steps:
        sampler.set_epoch(step // len(loader))
        for batch_items in loader:
            loss = objective(batch_items)["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            scheduler.step_update(step)
            float(loss.detach())
            now = time.perf_counter()
            if step > warmup:
                times.append(now - start)
            start = now
            if step == steps:
                break
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from mimlens.tasks.run import resolve_config

    cfg = resolve_config(None, {"task": "depth", "data.source": "synthetic:2048", "optim.batch_size": 32,
                                "optim.layer_decay": 0.65, "optim.warmup_steps": 4, "train.steps": args.steps,
                                "train.log_every": 1, "train.checkpoint_every": 0, "run.device": "cpu",
                                "run.progress": False, "run.tensorboard": False})
    cfg["data"]["synthetic"] = dict(DIFFICULTY)
    print(f"depth fine-tuning, vit-tiny-64, batch 32, {args.steps} steps ({args.warmup} left out), cpu fp32, "
          f"{torch.get_num_threads()} threads")
    ratios = []
    for repeat in range(args.repeats):
        plain = run_plain_loop(cfg, args.warmup)
        engine = run_engine(cfg, args.warmup)
        ratios.append(engine / plain)
        print(f"  run {repeat + 1}: plain loop {plain:.1f} img/s, engine {engine:.1f} img/s, "
              f"ratio {engine / plain:.3f}")
    print(f"engine / plain loop images per second: {statistics.median(ratios):.3f} (median of {args.repeats}; "
          "target >= 0.95)")


if __name__ == "__main__":
    main()
