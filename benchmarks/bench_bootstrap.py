"""Keypoint-AP bootstrap: all resamples at once (``keypoint_ap_resampled``) against one ``keypoint_ap`` per resample,
on synthetic per-image COCOeval records (one detection per image, 10 OKS thresholds, as the demo's pose runs).
Prints both times, their ratio and the largest difference between the two sets of resampled APs (0 expected).

    python benchmarks/bench_bootstrap.py                    # 512 images, 1,000 resamples
    python benchmarks/bench_bootstrap.py --images 2048 --resamples 200
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for image_id in range(n):
        hit = rng.uniform() < 0.4
        out.append({"image_id": image_id, "scores": [float(rng.uniform())],
                    "matched": [[int(hit and rng.uniform() < 1 - t / 12)] for t in range(10)],
                    "ignored": [[0] for _ in range(10)], "positives": 1})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()

    from mimlens.tasks.pose import keypoint_ap, keypoint_ap_resampled
    from mimlens.tasks.uncertainty import resampled_counts, resampled_indices

    items = records(args.images)
    start = time.perf_counter()
    loop = np.array([keypoint_ap([items[i] for i in np.sort(draw)])
                     for draw in resampled_indices(args.images, args.resamples)])
    looped = time.perf_counter() - start
    start = time.perf_counter()
    vectorised = keypoint_ap_resampled(items, resampled_counts(args.images, args.resamples))
    at_once = time.perf_counter() - start
    print(f"{args.images} images, {args.resamples} resamples: one AP per resample {looped:.2f} s, all at once "
          f"{at_once:.2f} s, ratio {looped / at_once:.1f}x; largest difference {np.abs(loop - vectorised).max():.2g}")


if __name__ == "__main__":
    main()
