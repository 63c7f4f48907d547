"""Cost of the streaming attention analysis, as ratios against baselines run on the same machine.

(a), (b)  time of ``attention_stats`` (distance, entropy and head KL together) ÷ time of a plain
          ``forward_features`` with fused attention on, same model, images and batch size;
          vit_small_patch16_224 and swin_tiny_patch4_window7_224 at 224 px, random init.
(c)       peak resident memory of an analysis of 512 images ÷ that of 64 images, each in a fresh
          process (``ru_maxrss``), for the streaming accumulator and for a naive pass that stores every
          attention map and reduces at the end. Images are generated batch by batch so that only the
          analysis itself can grow.

Timings alternate baseline and analysis and report medians; on a shared machine, rerun and compare.

    python benchmarks/bench_attention.py                     # everything
    python benchmarks/bench_attention.py --only time --repeats 5
    python benchmarks/bench_attention.py --only memory --memory-size 160
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

TIME_MODELS = ("vit_small_patch16_224", "swin_tiny_patch4_window7_224")


def build(name: str, fused: bool):
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=0).eval()
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused
    return model


def time_ratio(name: str, num_images: int, batch_size: int, repeats: int) -> dict:
    from mimlens.analysis.attention import attention_stats

    model = build(name, fused=True)
    images = torch.randn(num_images, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def plain():
        with torch.no_grad():
            for batch in images.split(batch_size):
                model.forward_features(batch)

    def analysis():
        attention_stats(model, images, batch_size=batch_size, transform=torch.nn.Identity())

    plain()
    analysis()
    plain_s, analysis_s = [], []
    for _ in range(repeats):
        for fn, out in ((plain, plain_s), (analysis, analysis_s)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return {
        "model": name,
        "plain_s": statistics.median(plain_s),
        "analysis_s": statistics.median(analysis_s),
        "ratio": statistics.median(a / p for a, p in zip(analysis_s, plain_s, strict=True)),
    }


def memory_child(mode: str, num_images: int, size: int, batch_size: int, model_name: str) -> None:
    """Run one configuration and print its peak RSS in MiB (called in a fresh process)."""
    from mimlens.analysis.attention import AttentionAccumulator, attention_capture, attention_stats

    torch.set_num_threads(2)
    model = build(model_name, fused=False)
    generator = torch.Generator().manual_seed(0)
    batches = (torch.randn(batch_size, 3, size, size, generator=generator) for _ in range(num_images // batch_size))
    if mode == "stream":
        attention_stats(model, batches, transform=torch.nn.Identity())
    else:
        stored = []  # every AttentionCall keeps its attention map alive until the end
        with attention_capture(model, stored.append), torch.no_grad():
            for batch in batches:
                model.forward_features(batch)
        accumulator = AttentionAccumulator()
        for call in stored:
            accumulator.update(call)
        accumulator.compute()
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def memory_ratio(counts: tuple[int, int], size: int, batch_size: int, model_name: str) -> dict:
    peaks = {}
    for mode in ("stream", "naive"):
        for n in counts:
            command = [sys.executable, __file__, "--child", mode, str(n), str(size), str(batch_size), model_name]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            peaks[mode, n] = json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    small, large = counts
    return {
        mode: {"peak_mib": {n: round(peaks[mode, n]) for n in counts}, "ratio": peaks[mode, large] / peaks[mode, small]}
        for mode in ("stream", "naive")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("time", "memory"))
    parser.add_argument("--images", type=int, default=64, help="images per timed pass")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-counts", type=int, nargs=2, default=(64, 512))
    parser.add_argument("--memory-size", type=int, default=224, help="image side for the memory runs")
    parser.add_argument("--memory-model", default="vit_small_patch16_224")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, n, size, batch_size, model_name = args.child
        memory_child(mode, int(n), int(size), int(batch_size), model_name)
        return
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only in (None, "time"):
        for name in TIME_MODELS:
            r = time_ratio(name, args.images, args.batch_size, args.repeats)
            print(
                f"{r['model']}: plain forward (fused) {r['plain_s']:.2f} s, analysis {r['analysis_s']:.2f} s "
                f"for {args.images} images -> analysis / forward = {r['ratio']:.3f} (median of {args.repeats})"
            )
    if args.only in (None, "memory"):
        counts = tuple(args.memory_counts)
        r = memory_ratio(counts, args.memory_size, args.batch_size, args.memory_model)
        for mode in ("stream", "naive"):
            peaks = ", ".join(f"{n} images {mib} MiB" for n, mib in r[mode]["peak_mib"].items())
            print(
                f"peak RSS {mode:>6} ({args.memory_model} at {args.memory_size} px): {peaks} -> "
                f"{counts[1]}/{counts[0]} = {r[mode]['ratio']:.3f}"
            )


if __name__ == "__main__":
    main()
