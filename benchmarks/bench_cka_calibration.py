"""Time of CKA's calibration (half-sample interval and permutation null) against the same analysis without it.

Model: ``vit-tiny-64`` (random init, 6 blocks), 256 random images at 64 px, batch 64, unit ``image``, one process
with 2 threads; ``cka_matrix`` end to end (forward passes included) with B = P = 0 and with the defaults B = P =
200, alternated ``--repeats`` times after a warm-up; the medians and their ratio are printed. On a shared
machine, rerun.

    python benchmarks/bench_cka_calibration.py
    python benchmarks/bench_cka_calibration.py --images 512 --replicates 500
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--replicates", type=int, default=200, help="B and P of the calibrated run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from mimlens.analysis.cka import cka_matrix
    from mimlens.models.build import build_model

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_model("vit-tiny-64")
    images = torch.rand(args.images, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def seconds(replicates: int) -> float:
        start = time.perf_counter()
        cka_matrix(model, images, batch_size=args.batch_size, bootstrap=replicates, permutations=replicates)
        return time.perf_counter() - start

    seconds(args.replicates)  # warm-up: first-call allocations and lazy imports are not part of the measurement
    times: dict[int, list[float]] = {0: [], args.replicates: []}
    for _ in range(args.repeats):
        for replicates in times:
            times[replicates].append(seconds(replicates))
    plain, calibrated = (statistics.median(times[r]) for r in times)
    print(f"torch {torch.__version__}; vit-tiny-64, {args.images} images, batch {args.batch_size}, "
          f"median of {args.repeats}")
    print(f"  B = P = 0: {plain:.3f} s; B = P = {args.replicates}: {calibrated:.3f} s; "
          f"overhead {calibrated / plain - 1:+.1%}")


if __name__ == "__main__":
    main()
