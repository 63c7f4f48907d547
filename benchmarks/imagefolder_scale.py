"""Image folders at ImageNet size: listing instead of decoding, worker memory over an epoch, one skipped-file line.

Makes N (default 100,000) JPEGs of 320x240 in a few hundred class folders (``--folder`` reuses one), one of them
damaged, then measures:

(a) launch to first training step of ``torchrun --nproc_per_node 2 -m mimlens pretrain simmim --arch
    vit-micro-32 --steps 1`` on the folder, imports included (the first ``log.jsonl`` record), with the listing
    cache cold and warm; the baseline is what the old code added before that step in every process: decoding
    every file once with PIL's draft mode (``--baseline``, timed here in one process), and, with ``--old-src
    DIR`` (a ``src`` folder of the old code, e.g. from ``git archive``), the same launch of that code;
(b) the resident memory (VmRSS, and Pss where ``/proc/PID/smaps_rollup`` exists) of 4 DataLoader workers after
    their first batch and at the end of one epoch over the folder (target end/start <= 1.1);
(c) the line that reports the damaged file: once, from a 2-process 2-worker pre-training epoch over a
    small folder holding a damaged file, and from (b)'s epoch;
and the listing time of the folder (cold, in one process) extrapolated linearly to ImageNet-1k's 1.28 M files.

    python benchmarks/imagefolder_scale.py --baseline
    python benchmarks/imagefolder_scale.py --images 20000 --folder /tmp/jpegs --baseline --old-src /tmp/old/src
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

IMAGENET_FILES = 1_281_167


def _write_class(args: tuple[str, int, int, int]) -> None:
    from PIL import Image

    folder, label, first, count = args
    Path(folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(label)
    base = np.zeros((240, 320, 3), dtype=np.uint8) + rng.integers(0, 256, 3, dtype=np.uint8)
    for i in range(first, first + count):
        pixels = base.copy()
        y, x = rng.integers(0, 200), rng.integers(0, 280)
        pixels[y : y + 40, x : x + 40] = rng.integers(0, 256, 3, dtype=np.uint8)
        Image.fromarray(pixels).save(f"{folder}/{i:07d}.jpg", quality=85)


def make_folder(root: Path, images: int, classes: int, damaged: int = 1) -> None:
    """``images`` JPEGs (320x240) spread over ``classes`` folders; the first ``damaged`` of the last class's
    files cut to half their bytes."""
    per, extra = divmod(images, classes)
    jobs, first = [], 0
    for label in range(classes):
        count = per + (label < extra)
        jobs.append((str(root / f"class{label:04d}"), label, first, count))
        first += count
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_write_class, jobs, chunksize=4))
    last = sorted((root / f"class{classes - 1:04d}").iterdir())
    for path in last[:damaged]:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


def decode_all(root: Path) -> float:
    """Seconds to decode every file once as the old up-front check did (PIL draft at 64x64)."""
    import warnings

    from PIL import Image

    paths = sorted(str(p) for p in root.glob("*/*.jpg"))
    start = time.perf_counter()
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as image:
                    image.draft("RGB", (64, 64))
                    image.convert("RGB")
        except OSError:
            pass
    return time.perf_counter() - start


def first_step(root: Path, src: str, cache: Path, out: Path, workers: int = 0, epochs: int = 0) -> dict:
    """Launch the 2-process pre-training; seconds to the first ``log.jsonl`` step record and to exit, and the
    lines that mention unreadable files."""
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1", MIMLENS_CACHE=str(cache), MPLBACKEND="Agg")
    length = ["--epochs", str(epochs)] if epochs else ["--steps", "1"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "mimlens", "pretrain", "simmim", "--arch", "vit-micro-32", "--data", str(root), *length,
               "--batch-size", "16", "--workers", str(workers), "--out", str(out), "--no-progress", "--device", "cpu"]
    shutil.rmtree(out, ignore_errors=True)
    log = out / "log.jsonl"
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as printed:
        process = subprocess.Popen(command, env=env, stdout=printed, stderr=subprocess.STDOUT, text=True)
        stepped = None
        while process.poll() is None:
            if stepped is None and log.is_file() and any('"step"' in line for line in log.read_text().splitlines()):
                stepped = time.perf_counter() - start
            time.sleep(0.05)
        ended = time.perf_counter() - start
        printed.seek(0)
        text = printed.read()
    if process.returncode != 0:
        raise SystemExit(f"pretrain failed ({process.returncode}):\n{text[-3000:]}")
    return {"first_step_s": stepped if stepped is not None else ended, "exit_s": ended,
            "unreadable_lines": [line for line in text.splitlines() if "unreadable" in line]}


def _memory(pid: int) -> tuple[int, int | None]:
    """(VmRSS, Pss) of a process in kB (Pss None without smaps_rollup)."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    try:
        pss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                   if line.startswith("Pss:"))
    except (OSError, StopIteration):
        pss = None
    return rss, pss


def worker_memory(root: Path, workers: int = 4) -> dict:
    """Worker memory after each worker's first batch and at the end of one epoch, and the skipped-file line."""
    import warnings

    import torch
    from torch.utils.data import DataLoader

    from mimlens.data.folders import ImageFiles, skipped_message
    from mimlens.data.transforms import eval_transform

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # 4 workers on fewer cores
    data = ImageFiles(root, eval_transform(32, mean=None))
    loader = DataLoader(data, batch_size=64, num_workers=workers, persistent_workers=True)
    batches = iter(loader)
    start = time.perf_counter()
    for _ in range(workers):
        next(batches)
    pids = [w.pid for w in batches._workers]
    first = [_memory(pid) for pid in pids]
    count = workers
    for _ in batches:
        count += 1
    last = [_memory(pid) for pid in pids]
    seconds = time.perf_counter() - start
    line = skipped_message(data)
    del batches, loader
    return {"first": first, "last": last, "batches": count, "epoch_s": seconds, "line": line}


def listing_times(root: Path, cache: Path) -> dict:
    from mimlens.data.listing import folder_listing, list_folder

    start = time.perf_counter()
    listing = list_folder(root.absolute())
    cold = time.perf_counter() - start
    os.environ["MIMLENS_CACHE"] = str(cache / "listing-probe")
    folder_listing(root)  # writes the cache
    start = time.perf_counter()
    folder_listing(root)
    cached = time.perf_counter() - start
    return {"files": len(listing.paths), "cold_s": cold, "cached_s": cached}


def report(args, root: Path, work: Path) -> None:
    src = str(Path(__file__).resolve().parents[1] / "src")
    listed = listing_times(root, work)
    print(f"listing {listed['files']} files: {listed['cold_s']:.2f} s cold (threads over class folders), "
          f"{listed['cached_s']:.3f} s from the cache; linear extrapolation to {IMAGENET_FILES:,} files: "
          f"{listed['cold_s'] * IMAGENET_FILES / listed['files']:.1f} s cold, "
          f"{listed['cached_s'] * IMAGENET_FILES / listed['files']:.2f} s cached", flush=True)
    cold = first_step(root, src, work / "cache-a", work / "run")
    warm = first_step(root, src, work / "cache-a", work / "run")
    print(f"(a) new code, 2 processes: first step {cold['first_step_s']:.1f} s after launch with the listing cache "
          f"cold (exit {cold['exit_s']:.1f} s), {warm['first_step_s']:.1f} s warm (exit {warm['exit_s']:.1f} s)",
          flush=True)
    if args.baseline:
        decode = decode_all(root)
        estimate = cold["first_step_s"] + decode
        print(f"(a) baseline: the old up-front decode of the {listed['files']} files takes {decode:.1f} s in one "
              f"process ({1e3 * decode / listed['files']:.2f} ms a file), done by each of the 2 processes in "
              f"parallel: first step at about {estimate:.1f} s (new launch + decode); ratio old/new "
              f"{estimate / cold['first_step_s']:.1f}x", flush=True)
    if args.old_src:
        old = first_step(root, args.old_src, work / "cache-old", work / "run-old")
        print(f"(a) old code ({args.old_src}), 2 processes: first step {old['first_step_s']:.1f} s after launch "
              f"(exit {old['exit_s']:.1f} s); ratio old/new (cold cache) "
              f"{old['first_step_s'] / cold['first_step_s']:.1f}x", flush=True)
    memory = worker_memory(root)
    rss = [b[0] / a[0] for a, b in zip(memory["first"], memory["last"], strict=True)]
    print(f"(b) 4 DataLoader workers, one epoch ({memory['batches']} batches of 64, {memory['epoch_s']:.0f} s): "
          f"VmRSS kB first batch {[a[0] for a in memory['first']]}, end {[b[0] for b in memory['last']]}; "
          f"end/start {', '.join(f'{r:.3f}' for r in rss)} (max {max(rss):.3f})", flush=True)
    if memory["first"][0][1] is not None:
        pss = [b[1] / a[1] for a, b in zip(memory["first"], memory["last"], strict=True)]
        print(f"(b) Pss kB first batch {[a[1] for a in memory['first']]}, end {[b[1] for b in memory['last']]}; "
              f"end/start {', '.join(f'{r:.3f}' for r in pss)} (max {max(pss):.3f})", flush=True)
    print(f"(c) after (b)'s epoch: {memory['line']}", flush=True)
    small = work / "small"
    make_folder(small, 64, 4)
    epoch = first_step(small, src, work / "cache-small", work / "run-small", workers=2, epochs=1)
    print(f"(c) 2 processes x 2 workers, one epoch over {small} (64 files, 1 damaged): "
          f"{len(epoch['unreadable_lines'])} line(s): {json.dumps(epoch['unreadable_lines'])}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=300)
    parser.add_argument("--folder", type=Path, help="reuse (or make once) the image folder here")
    parser.add_argument("--baseline", action="store_true", help="time the old up-front decode of every file")
    parser.add_argument("--old-src", help="a src folder of the old code to launch the same way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagefolder-scale-") as tmp:
        work = Path(tmp)
        root = args.folder or work / "jpegs"
        if not root.is_dir():
            start = time.perf_counter()
            make_folder(root, args.images, args.classes)
            print(f"made {args.images} JPEGs (320x240) in {args.classes} class folders of {root}, 1 damaged, in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        report(args, root, work)


if __name__ == "__main__":
    main()
