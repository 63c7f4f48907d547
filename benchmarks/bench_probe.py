"""Time and memory of the layer-wise probes (every block, all four tasks) on synthetic data.

(a) seconds per model: ``layerwise_probes`` on ``--model`` (default vit-tiny-64, random init) with
    ``--time-images`` training and as many evaluation images (tracking: that // 16 sequences of 16 frames);
(b) flatness: peak resident memory (``ru_maxrss``) of the process after a run on ``--small`` images, then
    after a run on ``--large`` images, both in this process; the ratio large ÷ small should stay near 1
    (the ridge sums are d x d per block, whatever the number of images). The peak before the first run
    (torch, timm, pycocotools and matplotlib imported) is printed too, so the growth can be read off.

    python benchmarks/bench_probe.py
    python benchmarks/bench_probe.py --only memory --small 64 --large 512
"""

from __future__ import annotations

import argparse
import resource
import time

import torch


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe(spec: str, images: int, batch_size: int) -> float:
    """Seconds for every block and task on ``images`` training and ``images`` evaluation images."""
    from mimlens.models import build_model
    from mimlens.tasks.probes.layerwise import layerwise_probes

    model = build_model(spec, seed=0)
    start = time.perf_counter()
    layerwise_probes(model, data="synthetic", num_train=images, num_eval=images, batch_size=batch_size)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit-tiny-64")
    parser.add_argument("--only", choices=("time", "memory"))
    parser.add_argument("--time-images", type=int, default=256)
    parser.add_argument("--small", type=int, default=64)
    parser.add_argument("--large", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.only != "time":
        import matplotlib  # noqa: F401  (imported by the command; part of the baseline, not of the probes)
        import pycocotools.cocoeval  # noqa: F401

        print(f"peak RSS before the runs {peak_mb():.0f} MB")
        seconds = probe(args.model, args.small, args.batch_size)
        small = peak_mb()
        print(f"{args.model}, {args.small} images: {seconds:.1f} s, peak RSS {small:.0f} MB")
        seconds = probe(args.model, args.large, args.batch_size)
        large = peak_mb()
        print(f"{args.model}, {args.large} images: {seconds:.1f} s, peak RSS {large:.0f} MB")
        print(f"peak memory ratio {args.large} / {args.small} images: {large / small:.3f}")
    if args.only != "memory":
        seconds = probe(args.model, args.time_images, args.batch_size)
        print(f"{args.model}: {seconds:.1f} s for every block and task on {args.time_images} training + "
              f"{args.time_images} evaluation images ({args.threads} thread(s))")


if __name__ == "__main__":
    main()
