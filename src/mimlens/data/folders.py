"""Image folders, crops of the bundled photos, and :func:`build_dataset`, which turns a data spec into a dataset.

Every dataset here returns dicts with at least ``image`` (a tensor after the transform), ``label``
(int64; -1 where there is none) and ``index``, like :class:`~mimlens.data.synthetic.SyntheticScenes`, and
has a ``num_classes`` attribute (0 when unlabelled).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from mimlens.data.listing import IMAGE_EXTENSIONS, folder_listing
from mimlens.data.photos import photos
from mimlens.data.skipped import SkipLog, gathered
from mimlens.data.synthetic import SyntheticScenes
from mimlens.data.transforms import eval_transform
from mimlens.errors import MimlensError

__all__ = ["ImageFiles", "PhotoCrops", "build_dataset", "skipped_message", "tree_classes"]

#: The split folders of an ImageFolder tree in the ImageNet layout (``DIR/<split>/<class>/*.jpg``).
SPLITS = ("train", "val", "test")


def _decoded(path: str, draft: tuple[int, int] | None = None) -> Image.Image:
    """The image at ``path`` decoded to RGB (every byte read, so truncation shows); ``draft`` lets a JPEG decode
    at a reduced scale, which still reads the whole file. PIL's own warnings are not passed on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as image:
            if draft is not None:
                image.draft("RGB", draft)
            return image.convert("RGB")


def _reason(err: Exception) -> str:
    if isinstance(err, Image.UnidentifiedImageError):
        return "not an image"
    if isinstance(err, Image.DecompressionBombError):
        return "too many pixels"
    return "truncated" if "truncated" in str(err) else "damaged"


def tree_classes(root: str | Path) -> list[str] | None:
    """The class folders of an ImageFolder tree with split folders (``train``, ``val``, ``test``): the sorted
    union of every split's class folders, so a class name has one label in every split even when a split lacks a
    class or holds one the others do not (the convention of Hugging Face's ``imagefolder``). None when ``root``
    has no split folder."""
    splits = [Path(root) / name for name in SPLITS if (Path(root) / name).is_dir()]
    if not splits:
        return None
    return sorted({entry.name for split in splits for entry in os.scandir(split) if entry.is_dir()})


class ImageFiles(Dataset):
    """The images under ``root``: an ImageFolder tree (one sub-folder per class, labels in sorted folder
    order, torchvision's convention) or, when ``root`` holds image files itself, a flat folder (label -1).
    ``classes`` fixes the class list (label = position in it) for a split of a larger tree, see
    :func:`tree_classes`; each class folder under ``root`` must be in it, and a listed class may have no folder.

    The folder is listed, not decoded (:func:`mimlens.data.listing.folder_listing`: cached, shared by the
    processes of a run); ``len`` counts its image files. ``files`` holds their paths relative to ``root``
    (sorted, a folder's files before its sub-folders') and ``labels`` their int64 labels. A file that fails to
    decode when read is replaced by the next readable one and recorded in :attr:`skip_log`; it never stops an
    epoch and is never warned about: :func:`skipped_message` is the one line that reports it.
    """

    def __init__(self, root: str | Path, transform: Callable | None = None, *, classes: list[str] | None = None):
        self.root, self.transform = Path(root), transform
        if not self.root.is_dir():
            raise MimlensError(f"image folder {self.root} does not exist or is not a directory")
        listing = folder_listing(self.root)
        if len(listing.paths) == 0:
            raise MimlensError(f"image folder {self.root} holds no image ({', '.join(IMAGE_EXTENSIONS)}) at its "
                               "top level or in class sub-folders")
        self.files = listing.paths
        if listing.folders:
            self.classes = self._class_list(listing.folders, classes)
            label_of = {name: label for label, name in enumerate(self.classes)}
            self.labels = np.array([label_of[name] for name in listing.folders], dtype=np.int64)[listing.folder]
        else:
            self.classes, self.labels = [], listing.folder
        self.num_classes = len(self.classes)
        self.skip_log = SkipLog()

    def _class_list(self, own: list[str], classes: list[str] | None) -> list[str]:
        if classes is None:
            return list(own)
        unknown = sorted(set(own) - set(classes))
        if unknown:
            raise MimlensError(f"image folder {self.root}: class folder(s) {', '.join(unknown)} are not among the "
                               f"tree's classes ({', '.join(classes)})")
        return list(classes)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of each unreadable file met so far by this process and its DataLoader workers."""
        return self.skip_log.entries()

    def path(self, index: int) -> str:
        return os.path.join(self.root, self.files[index])

    def first_readable(self, count: int) -> list[int]:
        """The positions of the first ``count`` files that decode (JPEGs at reduced scale), the others
        recorded as skipped: for a pass that must read each of its images once, such as an analysis."""
        found: list[int] = []
        for position in range(len(self)):
            if len(found) == count:
                break
            try:
                _decoded(self.path(position), draft=(64, 64))
                found.append(position)
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                self.skip_log.record(self.path(position), _reason(err))
        return found

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        for offset in range(len(self)):
            position = (index + offset) % len(self)
            path = self.path(position)
            try:
                image = _decoded(path)
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                self.skip_log.record(path, _reason(err))
                continue
            if self.transform is not None:
                image = self.transform(image)
            return {"image": image, "label": torch.tensor(self.labels[position]), "index": torch.tensor(position)}
        raise MimlensError(f"image folder {self.root}: none of its {len(self)} files could be decoded")


def skipped_message(dataset: Dataset) -> str | None:
    """The line every command prints about the unreadable files an image folder skipped (None when there are
    none): their number, the folder and a few paths in it with the reason, summed over DataLoader workers and
    ``torchrun`` processes. Subsets are looked through. A collective: every process calls it, rank 0 prints."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    log = getattr(dataset, "skip_log", None)
    skipped = gathered(log) if log is not None else []
    if not skipped:
        return None
    names = ", ".join(f"{os.path.relpath(path, dataset.root)} ({reason})" for path, reason in skipped[:5])
    more = f", … (+{len(skipped) - 5} more)" if len(skipped) > 5 else ""
    return f"skipped {len(skipped)} unreadable file(s) in {dataset.root}: {names}{more}"


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


def _count(spec: str) -> int:
    from mimlens.data.spec import parse_data_spec

    return parse_data_spec(spec).count


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

    - ``synthetic`` / ``synthetic:N``: :class:`SyntheticScenes` (2,048 by default) at ``img_size``; ``options``
      are its difficulty settings, e.g. ``num_objects=(1, 2), background_strength=0.5``; each split is its own
      random stream.
    - ``photos`` / ``photos:N``: :class:`PhotoCrops` of the bundled photos (1,000 by default).
    - a directory: :class:`ImageFiles` of ``DIR/<split>`` when that exists (ImageNet layout; labels from
      :func:`tree_classes`, the same in every split), else of ``DIR``; ``options`` go to :class:`ImageFiles`
      (``classes``).

    ``transform`` defaults to resize + centre crop to ``img_size`` without normalisation for folders, and to
    nothing for the generated sets (already ``img_size``, float in [0, 1]).
    """
    spec = str(spec)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return SyntheticScenes(_count(spec), img_size, seed, split=split, transform=transform, **options)
    if spec == "photos" or spec.startswith("photos:"):
        if options:
            raise MimlensError(f"data spec {spec!r} takes no options, got {sorted(options)}")
        return PhotoCrops(_count(spec), img_size, seed, split=split, transform=transform)
    root = Path(spec).expanduser()
    if not root.exists():
        raise MimlensError(f"data {spec!r} is neither 'synthetic[:N]', 'photos[:N]' nor an existing directory")
    if (root / split).is_dir():
        options.setdefault("classes", tree_classes(root))
        root = root / split
    return ImageFiles(root, transform or eval_transform(img_size, mean=None), **options)
