"""CKA's calibration (half-sample interval and permutation null): its time, and its intervals' coverage.

(a) time: ``vit-tiny-64`` (random init, 6 blocks), 256 random images at 64 px, batch 64, unit ``image``, one
    process with 2 threads; ``cka_matrix`` end to end (forward passes included) with B = P = 0 and with the
    defaults B = P = 200, alternated ``--repeats`` times after a warm-up; the medians and their ratio are printed.
    On a shared machine, rerun.
(b) coverage: a fixed dependent pair of distributions (x ~ N(0, I_30); y = 2 tanh(x A / sqrt(30)) + N(0, I_30)),
    its population linear CKA estimated on 4,000 samples; then ``--draws`` samples of 4 batches of 64, each
    with the 95 % interval of MinibatchCKA's half-sample replicates and that of a with-replacement bootstrap
    within batches (the same sums on resampled features, a sample drawn twice kept twice), 200 replicates each;
    the share of intervals that contain the population value is printed.

    python benchmarks/bench_cka_calibration.py
    python benchmarks/bench_cka_calibration.py --only time --images 512 --replicates 500
    python benchmarks/bench_cka_calibration.py --only coverage --draws 60
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def pair(n: int, generator: torch.Generator, mixing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, DIM, generator=generator, dtype=torch.float64)
    y = 2 * torch.tanh(x @ mixing / DIM**0.5) + torch.randn(n, DIM, generator=generator, dtype=torch.float64)
    return x, y


def batched_cka(x: torch.Tensor, y: torch.Tensor, size: int, bootstrap: int = 0, seed: int = 0):
    from mimlens.analysis.cka import MinibatchCKA

    accumulator = MinibatchCKA(["x"], ["y"], bootstrap=bootstrap, seed=seed)
    for start in range(0, len(x), size):
        accumulator.update({"x": x[start:start + size]}, {"y": y[start:start + size]})
    return accumulator


def with_replacement(x: torch.Tensor, y: torch.Tensor, size: int, replicates: int, seed: int) -> torch.Tensor:
    """CKA of each with-replacement resample of every batch (the same sums on the resampled features)."""
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(replicates):
        picks = torch.cat([start + torch.randint(min(size, len(x) - start), (min(size, len(x) - start),),
                                                 generator=generator) for start in range(0, len(x), size)])
        values.append(batched_cka(x[picks], y[picks], size).compute()[0, 0])
    return torch.stack(values)


def coverage(draws: int, replicates: int) -> None:
    from mimlens.analysis.cka import percentile_interval

    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(DIM, DIM, generator=generator, dtype=torch.float64)
    truth = float(batched_cka(*pair(4000, generator, mixing), 500).compute()[0, 0])
    hits = {"half-samples": 0, "with replacement": 0}
    for draw in range(draws):
        x, y = pair(4 * BATCH, generator, mixing)
        for name, values in (("half-samples", batched_cka(x, y, BATCH, replicates, draw).replicates()[:, 0, 0]),
                             ("with replacement", with_replacement(x, y, BATCH, replicates, draw))):
            low, high = percentile_interval(values)
            hits[name] += int(low <= truth <= high)
    print(f"(b) population CKA {truth:.3f}; 95 % intervals containing it in {draws} draws of 4 x {BATCH} samples: "
          + ", ".join(f"{name} {count}" for name, count in hits.items()))


DIM, BATCH = 30, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("time", "coverage"))
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--replicates", type=int, default=200, help="B and P of the calibrated run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--draws", type=int, default=60, help="samples drawn to measure the coverage")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.only in (None, "coverage"):
        coverage(args.draws, args.replicates)
    if args.only in (None, "time"):
        timing(args)


def timing(args: argparse.Namespace) -> None:
    from mimlens.analysis.cka import cka_matrix
    from mimlens.models.build import build_model

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
    print(f"(a) torch {torch.__version__}; vit-tiny-64, {args.images} images, batch {args.batch_size}, "
          f"median of {args.repeats}")
    print(f"  B = P = 0: {plain:.3f} s; B = P = {args.replicates}: {calibrated:.3f} s; "
          f"overhead {calibrated / plain - 1:+.1%}")


if __name__ == "__main__":
    main()
