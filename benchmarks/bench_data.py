"""Does synthetic-scene generation keep up with training? Images per second, as ratios in one process.

(a) generation: ``SyntheticScenes`` items per second at 64 px (every label rendered, tensors returned) on
    one core (``torch.set_num_threads(1)``), after a warm-up that fills the photo and sprite caches; also
    the same with the SimMIM pre-training transform (random resized crop + flip + normalise) and a mask;
(b) consumption: training steps of the ``vit-tiny-64`` preset (64 px, patch 8, depth 6, width 192,
    3 heads; 8 classes) on batches of 32, cross-entropy + AdamW, images per second at 1 thread and at
    ``--threads`` threads;
ratio = generation ÷ consumption: above 1, one data-loader worker feeds the training step.

Wall-clock and CPU (process) seconds are both reported; on a shared machine the two differ, so rerun.

    python benchmarks/bench_data.py
    python benchmarks/bench_data.py --images 4000 --steps 20 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch


def rate(fn, count: int) -> tuple[float, float]:
    """(items per wall-clock second, items per CPU second) of ``fn()`` producing ``count`` items."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)


def generation(images: int, with_transform: bool) -> tuple[float, float]:
    from mimlens.data.synthetic import SyntheticScenes
    from mimlens.data.transforms import train_transform
    from mimlens.pretrain.masking import random_block_mask

    transform = train_transform(64) if with_transform else None
    data = SyntheticScenes(images + 64, 64, seed=0, transform=transform)
    for i in range(64):  # warm-up: photo and sprite caches
        data[images + i]

    def run():
        for i in range(images):
            data[i]
            if with_transform:
                random_block_mask(64, 16, 8, 0.6)

    return rate(run, images)


def consumption(steps: int, threads: int) -> tuple[float, float]:
    from mimlens.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("vit-tiny-64", num_classes=8).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    images, labels = torch.randn(32, 3, 64, 64), torch.randint(0, 8, (32,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()

    def run():
        for _ in range(steps):
            step()

    return rate(run, steps * 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3000, help="scenes to generate (default 3000)")
    parser.add_argument("--steps", type=int, default=15, help="training steps of batch 32 (default 15)")
    parser.add_argument("--threads", type=int, default=2, help="threads for the second training measurement")
    args = parser.parse_args()

    torch.set_num_threads(1)
    plain = generation(args.images, with_transform=False)
    augmented = generation(args.images, with_transform=True)
    train_1 = consumption(args.steps, 1)
    train_n = consumption(args.steps, args.threads)
    print(f"{'measurement':<58} {'wall img/s':>10} {'cpu img/s':>10}")
    rows = [
        ("generate SyntheticScenes 64 px, 1 thread", plain),
        ("generate + SimMIM transform + mask, 1 thread", augmented),
        ("train vit-tiny-64, batch 32, AdamW, 1 thread", train_1),
        (f"train vit-tiny-64, batch 32, AdamW, {args.threads} threads", train_n),
    ]
    for name, (wall, cpu) in rows:
        print(f"{name:<58} {wall:>10.0f} {cpu:>10.0f}")
    print(f"ratio generation / training (1 thread each, wall): {plain[0] / train_1[0]:.1f}x")
    print(f"ratio generation+transform / training ({args.threads} threads, wall): {augmented[0] / train_n[0]:.1f}x")


if __name__ == "__main__":
    main()
