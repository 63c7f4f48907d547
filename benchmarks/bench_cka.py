"""Memory and time of within-model minibatch CKA, as ratios against baselines run on the same machine.

(a) flatness: peak resident memory (``ru_maxrss``) of ``cka_matrix`` over 10,000 images ÷ over 1,000
    images, each in a fresh process; also the growth over the process's memory just before the run.
(b) against a naive full-Gram implementation on the same images, layers and features (every block's output
    kept for all N images, one float64 N x N Gram per layer, U-centred, all pairs): time and peak memory,
    naive ÷ mimlens; and ``torch-cka`` (float32, pair-by-pair Grams per batch) when it is installed.

Model: a random timm ViT at 32 px (patch 8, 16 tokens, depth 6, width 64), sample unit ``image`` (1,024
values per image and block), batch 64. Images are generated batch by batch so only the analysis can grow.
Every configuration runs end to end (forward included) in its own process; on a shared machine, rerun.

    python benchmarks/bench_cka.py
    python benchmarks/bench_cka.py --only flat --large 10000 --small 1000
    python benchmarks/bench_cka.py --only naive --naive-images 2000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

BATCH = 64
IMAGE = 32


def build_model():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=IMAGE, patch_size=8, depth=6,
                             embed_dim=64, num_heads=2, num_classes=0).eval()


def image_stream(num_images: int):
    generator = torch.Generator().manual_seed(0)
    for start in range(0, num_images, BATCH):
        yield torch.rand(min(BATCH, num_images - start), 3, IMAGE, IMAGE, generator=generator)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mimlens(model, num_images: int) -> torch.Tensor:
    from mimlens.analysis.cka import cka_matrix

    # the estimator alone, like the naive one (the calibration's cost: benchmarks/bench_cka_calibration.py)
    return cka_matrix(model, image_stream(num_images), batch_size=BATCH, bootstrap=0, permutations=0).matrix


def run_naive(model, num_images: int) -> torch.Tensor:
    """Keep every block's output for all images, then full N x N Grams and the unbiased HSIC of every pair."""
    from mimlens.analysis.cka import u_center_gram
    from mimlens.analysis.features import BlockFeatures
    from mimlens.analysis.inputs import model_transform

    transform = model_transform(model)
    kept: dict[str, list[torch.Tensor]] = {}
    with torch.inference_mode(), BlockFeatures(model) as features:
        for batch in image_stream(num_images):
            model(transform(batch))
            for name, value in features.pop().items():
                kept.setdefault(name, []).append(value)
        grams = []
        for name in features.layers:
            x = torch.cat(kept.pop(name)).double()
            x -= x.mean(0)
            grams.append(u_center_gram(x @ x.T).flatten())
        stacked = torch.stack(grams)
        products = stacked @ stacked.T
        norms = products.diagonal().sqrt()
        return products / (norms[:, None] * norms[None, :])


def run_torch_cka(model, num_images: int) -> torch.Tensor:
    import torch_cka
    from torch.utils.data import DataLoader, TensorDataset

    from mimlens.analysis.features import block_names
    from mimlens.analysis.inputs import model_transform

    images = model_transform(model)(torch.cat(list(image_stream(num_images))))
    layers = block_names(model)
    oracle = torch_cka.CKA(model, model, "a", "b", model1_layers=layers, model2_layers=layers)
    with torch.inference_mode():
        loader = DataLoader(TensorDataset(images), batch_size=BATCH)
        oracle.compare(loader, loader)
    return oracle.export()["CKA"]


def worker(method: str, num_images: int) -> None:
    torch.set_num_threads(2)
    model = build_model()
    run = {"mimlens": run_mimlens, "naive": run_naive, "torch-cka": run_torch_cka}[method]
    run(model, BATCH)  # warm-up: first-call allocations and lazy imports are not part of the measurement
    before = rss_mb()
    start = time.perf_counter()
    matrix = run(model, num_images)
    seconds = time.perf_counter() - start
    print(json.dumps({"method": method, "images": num_images, "seconds": seconds, "rss_before_mb": before,
                      "peak_mb": peak_mb(), "matrix": matrix.double().tolist()}))


def measure(method: str, num_images: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", method, "--images", str(num_images)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{method} with {num_images} images failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["growth_mb"] = result["peak_mb"] - result["rss_before_mb"]
    print(f"  {method:9s} {num_images:6d} images: {result['seconds']:7.2f} s, peak RSS {result['peak_mb']:7.1f} MiB "
          f"(growth over the pre-run process {result['growth_mb']:6.1f} MiB)", flush=True)
    return result


def flat(small: int, large: int) -> None:
    print(f"(a) peak memory of within-model minibatch CKA, {large} vs {small} images (fresh processes)")
    a, b = measure("mimlens", small), measure("mimlens", large)
    print(f"  peak RSS ratio {large}/{small}: {b['peak_mb'] / a['peak_mb']:.3f} (target <= 1.2); "
          f"growth {b['growth_mb']:.1f} vs {a['growth_mb']:.1f} MiB")


def naive(num_images: int) -> None:
    print(f"(b) {num_images} images, same model, layers and unit: mimlens vs naive full-Gram (and torch-cka)")
    ours, full = measure("mimlens", num_images), measure("naive", num_images)
    growth = full["growth_mb"] / max(ours["growth_mb"], 1.0)
    print(f"  naive / mimlens: time {full['seconds'] / ours['seconds']:.2f}x, peak RSS "
          f"{full['peak_mb'] / ours['peak_mb']:.2f}x, memory growth {growth:.1f}x (target: >= 2x time or >= 5x memory)")
    gap = (torch.tensor(ours["matrix"]) - torch.tensor(full["matrix"])).abs().max()
    print(f"  max |minibatch - full-data| debiased CKA: {gap:.4f} (different estimators of the same quantity)")
    try:
        import torch_cka  # noqa: F401
    except ImportError:
        print("  torch-cka not installed: skipped")
        return
    other = measure("torch-cka", num_images)
    print(f"  torch-cka / mimlens: time {other['seconds'] / ours['seconds']:.2f}x, peak RSS "
          f"{other['peak_mb'] / ours['peak_mb']:.2f}x (torch-cka keeps prefix tokens: values differ slightly)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("flat", "naive"))
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10000)
    parser.add_argument("--naive-images", type=int, default=2000)
    parser.add_argument("--worker", choices=("mimlens", "naive", "torch-cka"), help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.images)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available, 2 used per process")
    if args.only in (None, "flat"):
        flat(args.small, args.large)
    if args.only in (None, "naive"):
        naive(args.naive_images)


if __name__ == "__main__":
    main()
