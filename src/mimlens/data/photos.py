"""The natural photos bundled inside scikit-image and scikit-learn, and a procedural-texture fallback.

These photos ship inside the installed packages (no download), so every machine has the same small set
of natural images for scene backgrounds and for analysis passes. Each is loaded once per process and
kept in memory as float32 RGB in [0, 1], shape (H, W, 3). A photo that cannot be loaded is left out;
when none can, :func:`photos` returns procedural textures instead, so callers never need a special case.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

__all__ = ["PHOTO_NAMES", "load_photos", "photos", "procedural_texture", "resized_photos"]

#: scikit-image photos stored inside the package (``skimage.data``) and scikit-learn's sample images.
PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "china", "flower")


def _skimage_photo(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


def _sklearn_photo(name: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return load_sample_image(f"{name}.jpg")


def _as_float_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3], dtype=np.float32) / np.float32(255.0)


@functools.cache
def load_photos() -> dict[str, np.ndarray]:
    """Every bundled photo that loads, by name, as float32 RGB (H, W, 3) in [0, 1] (cached per process)."""
    loaded = {}
    for name in PHOTO_NAMES:
        load = _sklearn_photo if name in ("china", "flower") else _skimage_photo
        try:
            loaded[name] = _as_float_rgb(load(name))
        except Exception as err:  # a missing optional data file must not stop scene generation
            warnings.warn(f"bundled photo {name!r} could not be loaded ({err}); it is left out", stacklevel=2)
    return loaded


def procedural_texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour texture: a sum of three oriented sinusoidal gratings, float32 (H, W, 3) in [0, 1]."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angles = rng.uniform(0, np.pi, 3).astype(np.float32)
    periods = rng.uniform(0.15, 0.6, 3).astype(np.float32) * max(height, width)
    phases = rng.uniform(0, 2 * np.pi, 3).astype(np.float32)
    colours = rng.uniform(-0.25, 0.25, (3, 3)).astype(np.float32)
    out = np.empty((height, width, 3), np.float32)
    out[:] = rng.uniform(0.3, 0.7, 3).astype(np.float32)
    for angle, period, phase, colour in zip(angles, periods, phases, colours, strict=True):
        wave = np.sin((x * np.cos(angle) + y * np.sin(angle)) * (2 * np.pi / period) + phase)
        out += wave[:, :, None] * colour
    return np.clip(out, 0.0, 1.0, out=out)


@functools.cache
def photos() -> tuple[np.ndarray, ...]:
    """The bundled photos, or eight procedural textures (512 px) if none could be loaded."""
    loaded = tuple(load_photos().values())
    if loaded:
        return loaded
    rng = np.random.default_rng(0)
    return tuple(procedural_texture(512, 512, rng) for _ in range(8))


@functools.cache
def resized_photos(short_side: int) -> tuple[np.ndarray, ...]:
    """Every photo of :func:`photos` resized (antialiased) so its shorter side is ``short_side`` pixels.

    Cached per size: scene generation crops these with plain slicing instead of resizing per image.
    """
    import torch
    import torch.nn.functional as F

    out = []
    for photo in photos():
        height, width = photo.shape[:2]
        scale = short_side / min(height, width)
        size = (max(short_side, round(height * scale)), max(short_side, round(width * scale)))
        tensor = torch.from_numpy(photo).permute(2, 0, 1)[None]
        resized = F.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)
        out.append(np.ascontiguousarray(resized[0].permute(1, 2, 0).clamp(0, 1).numpy()))
    return tuple(out)
