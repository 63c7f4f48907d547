"""Image loading, cropping and normalisation shared by the task readers.

Readers return float RGB in [0, 1] (like the synthetic scenes); the task's transform normalises.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mimlens.errors import MimlensError


def load_image(path: str | Path) -> torch.Tensor:
    """(3, H, W) float RGB in [0, 1] of an image file (any mode PIL reads, converted to RGB)."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as err:
        raise MimlensError(f"cannot read image {path}: {err}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def normalize(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Float RGB (…, 3, H, W) in [0, 1] → standardised per channel."""
    m = torch.tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image - m) / s


def crop(image: torch.Tensor, box: tuple[float, float, float, float], size: tuple[int, int]) -> torch.Tensor:
    """Resample the region ``box`` = (x0, y0, w, h) of a float (C, H, W) image to ``size`` = (h, w) bilinearly.

    Coordinates are continuous pixels (pixel i spans [i, i+1)), so output pixel (r, c) samples the image at
    (x0 + (c + ½)·w/out_w, y0 + (r + ½)·h/out_h); outside the image reads zero (black).
    """
    _, height, width = image.shape
    x0, y0, bw, bh = (float(v) for v in box)
    xs = x0 + (torch.arange(size[1], dtype=torch.float64) + 0.5) * bw / size[1]
    ys = y0 + (torch.arange(size[0], dtype=torch.float64) + 0.5) * bh / size[0]
    gy, gx = torch.meshgrid(2 * ys / height - 1, 2 * xs / width - 1, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None].to(image)
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of a float (…, C, H, W) tensor to ``size`` = (H, W)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    batched = image.ndim == 4
    out = F.interpolate(image if batched else image[None], size=tuple(size), mode="bilinear", align_corners=False,
                        antialias=True)
    return out if batched else out[0]
