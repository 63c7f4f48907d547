"""Per-step overhead of the training engine: its images/s ÷ those of a bare hand-written loop.

Both train the same SimMIM objective (same initialisation, batch, AdamW parameter groups, gradient clipping)
on the same per-sample transform; the bare loop is ``DataLoader`` → forward → backward → clip → step, with no
scheduler, logging, checkpoint or RNG bookkeeping. Every step after the first ``--warmup`` is timed — for the
engine from its own ``log.jsonl`` written every step (each line timed from the end of the previous one, so
data loading, the update and the per-step log flush are inside), for the bare loop with ``perf_counter``
around the same work — and images/s is the batch ÷ the median step time, which shrugs off other processes'
bursts on a shared machine. Runs alternate and the median ratio is printed; target ≥ 0.9.

    python benchmarks/bench_engine.py                                  # CPU: the tiny SimMIM recipe
    python benchmarks/bench_engine.py --device cuda --arch vit-base-224 --batch-size 128
                                        # GPU: SimMIM ViT-B/16 at 224 px, bf16 autocast, + peak memory

On CPU the data are the synthetic scenes of ``configs/simmim_vit-tiny_synthetic64.yaml``; on CUDA they are
random images held in memory (the scene generator is not meant to feed a GPU), augmented in ``--workers``
processes.
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
from torch.utils.data import DataLoader, Dataset

RECIPE = Path(__file__).parents[1] / "configs" / "simmim_vit-tiny_synthetic64.yaml"


class MemoryImages(Dataset):
    """``n`` random uint8 images kept in memory, returned as float (3, H, W) in [0, 1]."""

    def __init__(self, n: int, size: int):
        self.images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator())

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i].float() / 255}


class Transformed(Dataset):
    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.transform(self.dataset[i])


def build(args, cfg):
    from mimlens.models import build_model
    from mimlens.pretrain import SimMIM
    from mimlens.pretrain.run import build_dataset
    from mimlens.pretrain.simmim import scaled_mask_patch

    torch.manual_seed(0)
    encoder = build_model(args.arch, **cfg["model"]["kwargs"])
    img_size = int(encoder.patch_embed.img_size[0])
    token = int(encoder.patch_embed.patch_size[0])
    model = SimMIM(encoder, mask_patch=scaled_mask_patch(img_size, token))
    data = build_dataset(cfg, img_size) if args.device == "cpu" else MemoryImages(args.images, img_size)
    return model, data, model.transform(img_size, cfg["data"]["crop_scale"])


def run_engine(args, cfg) -> float:
    from mimlens.engine import train

    model, data, transform = build(args, cfg)
    with tempfile.TemporaryDirectory() as run_dir:
        train(model, data, transform, copy.deepcopy(cfg), run_dir)
        lines = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]
    ips = [r["images_per_s"] for r in lines if "images_per_s" in r and r["step"] > args.warmup]
    return statistics.median(ips)


def run_bare(args, cfg) -> float:
    from mimlens.engine import build_optimizer

    model, data, transform = build(args, cfg)
    device = torch.device(args.device)
    model.to(device).train()
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05)
    params = [p for p in model.parameters() if p.requires_grad]
    loader = DataLoader(Transformed(data, transform), batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.workers, pin_memory=device.type == "cuda",
                        persistent_workers=args.workers > 0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    times, step, start = [], 0, time.perf_counter()
    while step < args.steps:
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                loss = model(batch)["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()  # the engine, too, reads its losses back every logged step
            step += 1
            now = time.perf_counter()
            if step > args.warmup:
                times.append(now - start)
            start = now
            if step == args.steps:
                break
    return args.batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--arch", default=None, help="default: vit-tiny-64 (CPU), vit-base-224 (CUDA)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 (CPU), 128 (CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="default: 60 (CPU), 60 (CUDA)")
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the measurement")
    parser.add_argument("--workers", type=int, default=None, help="default: 0 (CPU), 8 (CUDA)")
    parser.add_argument("--images", type=int, default=2048, help="in-memory images for the CUDA mode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("no CUDA: the GPU mode needs a CUDA device; nothing measured")
        return
    args.arch = args.arch or ("vit-base-224" if cuda else "vit-tiny-64")
    args.batch_size = args.batch_size or (128 if cuda else 32)
    args.steps = args.steps or 60
    args.workers = args.workers if args.workers is not None else (8 if cuda else 0)

    from mimlens.pretrain.run import resolve_config

    cfg = resolve_config(RECIPE, {"model.name": args.arch, "optim.batch_size": args.batch_size,
                                  "train.steps": args.steps, "train.log_every": 1,
                                  "run.device": args.device, "run.num_workers": args.workers})
    cfg["optim"]["warmup_steps"] = 1
    cfg["train"]["checkpoint_every"] = 0
    cfg["run"].update(progress=False, tensorboard=False)
    if cuda:
        cfg["model"]["kwargs"] = {}
        cfg["data"]["crop_scale"] = [0.67, 1.0]
    print(f"SimMIM {args.arch}, batch {args.batch_size}, {args.steps} steps ({args.warmup} warm-up), "
          f"{args.device}{' bf16 autocast' if cuda else ' fp32'}, {torch.get_num_threads()} threads, "
          f"{args.workers} workers")
    ratios = []
    for repeat in range(args.repeats):
        bare = run_bare(args, cfg)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        engine = run_engine(args, cfg)
        ratios.append(engine / bare)
        peak = f", engine peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda else ""
        print(f"  run {repeat + 1}: bare loop {bare:.1f} img/s, engine {engine:.1f} img/s, "
              f"ratio {engine / bare:.3f}{peak}")
    print(f"engine / bare images per second: {statistics.median(ratios):.3f} (median of {args.repeats}; target >= 0.9)")


if __name__ == "__main__":
    main()
