"""``mimlens masks``: AvgDist of SimMIM masking settings (the paper's Fig. 2a x-axis).

One setting (``--img-size 224 --mask-patch 32 --ratio 0.6``), a grid (several ``--mask-patch`` and
``--ratio`` values) or ``--sweep`` (the paper's grid: mask patch 4, 8, 16, 32 × ratio 0.1 … 0.9; a given
``--mask-patch`` or ``--ratio`` replaces that axis). Prints a table and writes a run directory:
``config.yaml``, ``avgdist.json``, ``figures/avgdist.png`` and ``figures/mask_examples.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "masks": {"img_size": 224, "mask_patch_sizes": None, "ratios": None, "num_masks": 200, "seed": 0, "sweep": False},
    "run": {"out": None},
}
CONVENTION = (
    "mean Euclidean distance from each masked pixel to the nearest visible pixel (pixel centres, scipy "
    "distance_transform_edt; outside the image is not visible), averaged over masked pixels and masks; "
    "SimMIM masking: exactly ceil(ratio * blocks) blocks chosen uniformly"
)


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


def grid(settings: dict[str, Any]) -> tuple[list[int], list[float]]:
    """The mask patch sizes and ratios to measure: given ones, else the paper's (``sweep``) or 32 and 0.6."""
    from mimlens.errors import MimlensError
    from mimlens.probe.masks import PAPER_MASK_PATCH_SIZES, PAPER_RATIOS

    sweep = bool(settings["sweep"])
    patches = settings["mask_patch_sizes"] or (list(PAPER_MASK_PATCH_SIZES) if sweep else [32])
    ratios = settings["ratios"] or (list(PAPER_RATIOS) if sweep else [0.6])
    if isinstance(patches, int):
        patches = [patches]
    if isinstance(ratios, (int, float)):
        ratios = [ratios]
    if settings["img_size"] < 1:
        raise MimlensError(f"--img-size must be positive, got {settings['img_size']}")
    for ratio in ratios:
        if not 0 <= ratio < 1:
            raise MimlensError(f"--ratio {ratio} must lie in [0, 1): a ratio of 1 leaves no visible pixel")
    return sorted({int(p) for p in patches}), sorted({float(r) for r in ratios})


def measure(img_size: int, patches: list[int], ratios: list[float], num_masks: int, seed: int) -> list[dict]:
    from mimlens.probe.masks import avg_dist_sweep

    rows = avg_dist_sweep(img_size, patches, ratios, num_masks, seed)
    for row in rows:
        row["avg_dist_frac"] = None if row["avg_dist_px"] is None else row["avg_dist_px"] / img_size
    return rows


def write_run(out: Path, cfg: dict[str, Any], rows: list[dict]) -> None:
    import torch

    from mimlens.config import save_config
    from mimlens.data.photos import resized_photos
    from mimlens.io import save_json
    from mimlens.probe.masks import random_block_mask
    from mimlens.report.figures_masks import moderate_band, plot_avg_dist, plot_mask_examples

    settings = cfg["masks"]
    img_size = settings["img_size"]
    save_config(cfg, out)
    save_json({
        "img_size": img_size, "num_masks": settings["num_masks"], "seed": settings["seed"],
        "convention": CONVENTION, "moderate_band_px": list(moderate_band(img_size)), "settings": rows,
    }, out / "avgdist.json")
    plot_avg_dist(rows, img_size, out / "figures" / "avgdist.png")
    generator = torch.Generator().manual_seed(settings["seed"])
    examples = {(r["mask_patch_size"], r["ratio"]): random_block_mask(
        img_size, r["mask_patch_size"], 1, r["ratio"], generator).numpy() for r in rows}
    photo = resized_photos(img_size)[0]
    top, left = (photo.shape[0] - img_size) // 2, (photo.shape[1] - img_size) // 2
    image = photo[top : top + img_size, left : left + img_size]
    plot_mask_examples(examples, image, out / "figures" / "mask_examples.png")


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
