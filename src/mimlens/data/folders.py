"""Image folders, crops of the bundled photos, and :func:`build_dataset`, which turns a data spec into a dataset.

Every dataset here returns dicts with at least ``image`` (a tensor after the transform), ``label``
(int64; -1 where there is none) and ``index``, like :class:`~mimlens.data.synthetic.SyntheticScenes`, and
has a ``num_classes`` attribute (0 when unlabelled).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from mimlens.data.photos import photos
from mimlens.data.synthetic import SyntheticScenes
from mimlens.data.transforms import eval_transform
from mimlens.errors import MimlensError

__all__ = ["DEFAULT_NUM_IMAGES", "ImageFiles", "PhotoCrops", "build_dataset"]

#: Images in ``synthetic`` and ``photos`` when the spec gives no count.
DEFAULT_NUM_IMAGES = {"synthetic": 10_000, "photos": 1_000}


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMG_EXTENSIONS


class ImageFiles(Dataset):
    """The images under ``root``: an ImageFolder tree (one sub-folder per class, labels in sorted folder
    order, torchvision's convention) or, when ``root`` holds image files itself, a flat folder (label -1).

    Unreadable files never stop an epoch. With ``verify`` (default) every file's header is read once here
    and files PIL cannot open are left out; a file that still fails to decode later is replaced by the next
    readable one. Both kinds are recorded in ``skipped`` as ``(path, reason)`` and reported by a warning.
    """

    def __init__(self, root: str | Path, transform: Callable | None = None, *, verify: bool = True):
        self.root, self.transform = Path(root), transform
        if not self.root.is_dir():
            raise MimlensError(f"image folder {self.root} does not exist or is not a directory")
        if any(_is_image(p) for p in self.root.iterdir()):
            self.classes: list[str] = []
            samples = [(str(p), -1) for p in sorted(self.root.iterdir()) if _is_image(p)]
        else:
            self.classes, class_to_idx = find_classes(self.root) if any(self.root.iterdir()) else ([], {})
            samples = make_dataset(self.root, class_to_idx, IMG_EXTENSIONS, allow_empty=True) if class_to_idx else []
        self.skipped: list[tuple[str, str]] = []
        if verify:
            samples = [s for s in samples if self._readable_header(s[0])]
        if not samples:
            raise MimlensError(
                f"image folder {self.root} holds no readable image ({', '.join(IMG_EXTENSIONS)}) at its top level "
                "or in class sub-folders"
            )
        self.samples = samples
        self.num_classes = len(self.classes)
        if self.skipped:
            warnings.warn(f"{self.root}: skipped {len(self.skipped)} unreadable file(s), e.g. {self.skipped[0][0]}",
                          stacklevel=2)

    def _readable_header(self, path: str) -> bool:
        try:
            with Image.open(path):
                return True
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            self.skipped.append((path, str(err)))
            return False

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        for offset in range(len(self.samples)):
            position = (index + offset) % len(self.samples)
            path, label = self.samples[position]
            try:
                with Image.open(path) as image:
                    image = image.convert("RGB")
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                self.skipped.append((path, str(err)))
                warnings.warn(f"{path}: unreadable ({err}); using the next image instead", stacklevel=2)
                continue
            if self.transform is not None:
                image = self.transform(image)
            return {"image": image, "label": torch.tensor(label), "index": torch.tensor(position)}
        raise MimlensError(f"image folder {self.root}: none of its {len(self.samples)} files could be decoded")


class PhotoCrops(Dataset):
    """Random crops of the bundled photos (:func:`~mimlens.data.photos.photos`), item ``i`` determined by
    (seed, split, i): a crop of the aspect of ``img_size`` (an int or ``(height, width)``) whose side is
    10–100 % of the largest that fits, resized (antialiased) to ``img_size``, flipped half the time.
    ``image`` is float (3, H, W) in [0, 1] before ``transform``; ``label`` is the photo's position in
    :func:`photos`."""

    def __init__(self, num_images: int, img_size: int | tuple[int, int] = 64, seed: int = 0, *, split: str = "train",
                 transform: Callable | None = None):
        if num_images < 1:
            raise MimlensError(f"num_images must be at least 1, got {num_images}")
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))
        self.num_images, self.seed, self.transform = num_images, seed, transform
        self.split_id = {"train": 0, "val": 1, "test": 2}.get(split)
        if self.split_id is None:
            raise MimlensError(f"split must be 'train', 'val' or 'test', got {split!r}")
        self.num_classes = len(photos())

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"photo crop index {index} out of range for {self.num_images} crops")
        rng = np.random.default_rng([self.seed, 2, self.split_id, index])
        label = int(rng.integers(self.num_classes))
        photo = photos()[label]
        height, width = self.img_size
        fit = min(photo.shape[0] / height, photo.shape[1] / width)  # the largest crop of this aspect
        scale = fit * math.sqrt(rng.uniform(0.01, 1.0))
        rows, cols = max(1, round(height * scale)), max(1, round(width * scale))
        top, left = int(rng.integers(photo.shape[0] - rows + 1)), int(rng.integers(photo.shape[1] - cols + 1))
        crop = torch.from_numpy(photo[top : top + rows, left : left + cols]).permute(2, 0, 1)
        if rng.random() < 0.5:
            crop = crop.flip(2)
        image = torch.nn.functional.interpolate(crop[None], size=self.img_size, mode="bilinear",
                                                antialias=True, align_corners=False)[0].clamp(0, 1)
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "label": torch.tensor(label), "index": torch.tensor(index)}


def _count(spec: str, name: str) -> int:
    if spec == name:
        return DEFAULT_NUM_IMAGES[name]
    text = spec[len(name) + 1 :]
    if not text.isdigit() or int(text) < 1:
        raise MimlensError(f"data spec {spec!r}: expected '{name}' or '{name}:N' with N a positive integer")
    return int(text)


def build_dataset(
    spec: str | Path,
    *,
    img_size: int | tuple[int, int] = 64,
    split: str = "train",
    transform: Callable | None = None,
    seed: int = 0,
    **options,
) -> Dataset:
    """The dataset a data spec names.

    - ``synthetic`` / ``synthetic:N``: :class:`SyntheticScenes` (10,000 by default) at ``img_size``; ``options``
      are its difficulty settings, e.g. ``num_objects=(1, 2), background_strength=0.5``; each split is its own
      random stream.
    - ``photos`` / ``photos:N``: :class:`PhotoCrops` of the bundled photos (1,000 by default).
    - a directory: :class:`ImageFiles` of ``DIR/<split>`` when that exists (ImageNet layout), else of ``DIR``;
      ``options`` go to :class:`ImageFiles` (``verify``).

    ``transform`` defaults to resize + centre crop to ``img_size`` without normalisation for folders, and to
    nothing for the generated sets (already ``img_size``, float in [0, 1]).
    """
    spec = str(spec)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return SyntheticScenes(_count(spec, "synthetic"), img_size, seed, split=split, transform=transform, **options)
    if spec == "photos" or spec.startswith("photos:"):
        if options:
            raise MimlensError(f"data spec {spec!r} takes no options, got {sorted(options)}")
        return PhotoCrops(_count(spec, "photos"), img_size, seed, split=split, transform=transform)
    root = Path(spec).expanduser()
    if not root.exists():
        raise MimlensError(f"data {spec!r} is neither 'synthetic[:N]', 'photos[:N]' nor an existing directory")
    if (root / split).is_dir():
        root = root / split
    return ImageFiles(root, transform or eval_transform(img_size, mean=None), **options)
