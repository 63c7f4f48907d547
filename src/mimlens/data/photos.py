"""The natural photos bundled inside scikit-image and scikit-learn, and a procedural-texture fallback.

These photos ship inside the installed packages (no download), so every machine has the same small set
of natural images for scene backgrounds and for analysis passes. Each is loaded once per process and
kept in memory as float32 RGB in [0, 1], shape (H, W, 3). A photo that cannot be loaded is left out;
when none can, :func:`photos` returns procedural textures instead, so callers never need a special case.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["PHOTO_FILES", "PHOTO_NAMES", "load_photos", "photos", "procedural_texture", "resized_photos"]

#: Photos stored inside the installed scikit-image (``skimage.data``) and scikit-learn (sample images) packages.
PHOTO_FILES = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "camera": ("skimage", "data/camera.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
}
PHOTO_NAMES = tuple(PHOTO_FILES)


def _package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing it (importing ``sklearn.datasets``
    alone takes seconds)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / relative


@functools.cache
def load_photos() -> dict[str, np.ndarray]:
    """Every bundled photo that loads, by name, as float32 RGB (H, W, 3) in [0, 1] (cached per process);
    grey photos are repeated over the three channels."""
    loaded = {}
    for name, (package, relative) in PHOTO_FILES.items():
        try:
            with Image.open(_package_file(package, relative)) as image:
                loaded[name] = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255.0)
        except (OSError, ValueError) as err:  # a missing data file must not stop scene generation
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
    """Every photo of :func:`photos` resized (PIL bilinear, antialiased) so its shorter side is ``short_side``.

    Cached per size: scene generation crops these with plain slicing instead of resizing per image.
    """
    out = []
    for photo in photos():
        height, width = photo.shape[:2]
        scale = short_side / min(height, width)
        size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
        image = Image.fromarray(np.round(photo * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
        out.append(np.asarray(image, dtype=np.float32) / np.float32(255.0))
    return tuple(out)
