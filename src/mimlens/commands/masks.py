"""``mimlens masks``: AvgDist of SimMIM masking settings (the paper's Fig. 2a x-axis).

One setting (``--img-size 224 --mask-patch 32 --ratio 0.6``), a grid (several ``--mask-patch`` and
``--ratio`` values) or ``--sweep`` (the paper's grid: mask patch 4, 8, 16, 32 × ratio 0.1 … 0.9; a given
``--mask-patch`` or ``--ratio`` replaces that axis). Prints a table and writes a run directory:
``config.yaml``, ``avgdist.json``, ``figures/avgdist.png`` and ``figures/mask_examples.png``
(:mod:`mimlens.pretrain.avgdist_run`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "masks": {"img_size": 224, "mask_patch_sizes": None, "ratios": None, "num_masks": 200, "seed": 0, "sweep": False},
    "run": {"out": None},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--img-size", type=int, help="image side in pixels (default 224)")
    parser.add_argument("--mask-patch", type=int, nargs="+", metavar="PX", help="mask patch size(s) in pixels (32)")
    parser.add_argument("--ratio", type=float, nargs="+", help="mask ratio(s) in [0, 1) (default 0.6)")
    parser.add_argument("--num-masks", type=int, help="random masks per setting (default 200)")
    parser.add_argument("--seed", type=int, help="seed of the masks (default 0)")
    parser.add_argument("--sweep", action="store_true", default=None,
                        help="the paper's grid: mask patch 4, 8, 16, 32 x ratio 0.1 ... 0.9")
    parser.add_argument("--out", metavar="DIR", help="run directory to write (default runs/masks_<size>px)")
    parser.add_argument("--config", metavar="YAML", help="YAML with the same keys as config.yaml; flags override it")


def run(args: argparse.Namespace) -> int:
    from mimlens.config import resolve
    from mimlens.pretrain.avgdist_run import grid, measure, write_run
    from mimlens.rundir import check_out

    flags = {
        "masks.img_size": args.img_size, "masks.mask_patch_sizes": args.mask_patch, "masks.ratios": args.ratio,
        "masks.num_masks": args.num_masks, "masks.seed": args.seed, "masks.sweep": args.sweep, "run.out": args.out,
    }
    cfg = resolve(DEFAULTS, args.config, flags)
    settings = cfg["masks"]
    out = Path(cfg["run"]["out"] or Path("runs") / f"masks_{settings['img_size']}px")
    cfg["run"]["out"] = str(out)
    check_out(out, "masks")
    patches, ratios = grid(settings)
    settings["mask_patch_sizes"], settings["ratios"] = patches, ratios
    rows = measure(settings["img_size"], patches, ratios, settings["num_masks"], settings["seed"])
    write_run(out, cfg, rows)
    print(format_table(rows, settings["img_size"], settings["num_masks"]))
    print(f"wrote {out / 'avgdist.json'} and {out / 'figures'}")
    return 0


def format_table(rows: list[dict], img_size: int, num_masks: int) -> str:
    from mimlens.report.figures_masks import moderate_band

    low, high = moderate_band(img_size)
    lines = [
        f"AvgDist of SimMIM random masking at {img_size} px, {num_masks} masks per setting "
        f"(moderate band {low:.3g}-{high:.3g} px)",
        f"{'mask patch':>10}  {'ratio':>5}  {'AvgDist px':>10}  {'of side':>7}",
    ]
    for r in rows:
        setting = f"{r['mask_patch_size']:>10}  {r['ratio']:>5.2f}"
        if r["avg_dist_px"] is None:
            lines.append(f"{setting}  {'-':>10}  {'-':>7}  undefined: every block is masked")
            continue
        band = "  moderate" if low <= r["avg_dist_px"] <= high else ""
        lines.append(f"{setting}  {r['avg_dist_px']:>10.2f}  {r['avg_dist_frac']:>7.3f}{band}")
    return "\n".join(lines)
