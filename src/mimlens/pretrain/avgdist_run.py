"""The run directory of ``mimlens masks``: AvgDist of a grid of SimMIM masking settings
(:func:`mimlens.pretrain.masking.avg_dist_sweep`) with ``avgdist.json``, ``figures/avgdist.png`` and
``figures/mask_examples.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONVENTION = (
    "mean Euclidean distance from each masked pixel to the nearest visible pixel (pixel centres, scipy "
    "distance_transform_edt; outside the image is not visible), averaged over masked pixels and masks; "
    "SimMIM masking: exactly ceil(ratio * blocks) blocks chosen uniformly"
)


def grid(settings: dict[str, Any]) -> tuple[list[int], list[float]]:
    """The mask patch sizes and ratios to measure: given ones, else the paper's (``sweep``) or 32 and 0.6."""
    from mimlens.errors import MimlensError
    from mimlens.pretrain.masking import PAPER_MASK_PATCH_SIZES, PAPER_RATIOS

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
    from mimlens.pretrain.masking import avg_dist_sweep

    rows = avg_dist_sweep(img_size, patches, ratios, num_masks, seed)
    for row in rows:
        row["avg_dist_frac"] = None if row["avg_dist_px"] is None else row["avg_dist_px"] / img_size
    return rows


def write_run(out: Path, cfg: dict[str, Any], rows: list[dict]) -> None:
    import torch

    from mimlens.config import save_config
    from mimlens.data.photos import resized_photos
    from mimlens.io import save_json
    from mimlens.pretrain.masking import random_block_mask
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
