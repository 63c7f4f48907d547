"""Detection data: COCO instances files (or synthetic scenes as COCO instances) and the letterbox transform.

Conventions:
- the ground truth is a pycocotools ``COCO`` index of a COCO *instances* file: ``images`` (``id``,
  ``file_name``, ``width``, ``height``), ``annotations`` (``image_id``, ``category_id``, ``bbox`` = x, y, w, h
  in pixels, optional ``iscrowd`` and ``area``) and ``categories`` (``id``, ``name``); evaluation reads it
  as it is (COCOeval treats crowd regions as areas to ignore);
- training targets follow torchvision's detection convention: ``boxes`` (N, 4) as x1, y1, x2, y2 pixels
  (``box_convert`` from xywh, clipped to the image) and ``labels`` (N,) in 1…K, the position of the
  ``category_id`` in the sorted category list plus one (0 is background); crowd annotations and boxes
  with no area after clipping are left out; images without annotations stay, as pure background;
- images are float RGB in [0, 1]. :class:`DetectionTransform` letterboxes them into the square model
  input: the longer side scaled to ``size`` (bilinear, antialiased), the shorter one padded at the
  bottom/right with the normalisation mean (which the detector's normalisation maps to 0), the boxes
  scaled with the image; predictions are mapped back by dividing by the same per-axis ``scale``.

Synthetic scenes reach the detector through ``mimlens.data.export.export_coco_instances`` and this reader,
like any COCO folder.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.ops import box_convert

from mimlens.errors import MimlensError
from mimlens.tasks.images import load_image, resize

__all__ = [
    "CocoInstances",
    "DetectionTransform",
    "coco_index",
    "detection_set",
    "letterbox",
    "load_instances",
]

_REQUIRED = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}


def coco_index(dataset: dict[str, Any], where: str = "COCO instances"):
    """A pycocotools ``COCO`` index of an instances ``dataset`` dict after checking the keys it needs."""
    from pycocotools.coco import COCO

    if not isinstance(dataset, dict):
        raise MimlensError(f"{where}: expected a JSON object with images, annotations and categories")
    for section, keys in _REQUIRED.items():
        entries = dataset.get(section)
        if not isinstance(entries, list):
            raise MimlensError(f"{where}: missing the {section!r} list")
        for number, entry in enumerate(entries):
            missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise MimlensError(f"{where}: {section}[{number}] lacks {', '.join(missing)}")
    images = {image["id"] for image in dataset["images"]}
    categories = {category["id"] for category in dataset["categories"]}
    for number, ann in enumerate(dataset["annotations"]):
        if ann["image_id"] not in images or ann["category_id"] not in categories:
            raise MimlensError(f"{where}: annotations[{number}] names image {ann['image_id']} / category "
                               f"{ann['category_id']}, not listed in images / categories")
        if len(ann["bbox"]) != 4:
            raise MimlensError(f"{where}: annotations[{number}] bbox must be [x, y, w, h], got {ann['bbox']}")
        ann.setdefault("id", number + 1)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_instances(ann_file: str | Path):
    """The ``COCO`` index of an instances JSON file (checked, read quietly); parsed once per process
    (:func:`mimlens.tasks.coco_files.parsed_once`), so callers share it and must not change it."""
    from mimlens.tasks.coco_files import parsed_once

    path = Path(ann_file)
    if not path.is_file():
        raise MimlensError(f"COCO instances file {path} does not exist")
    return parsed_once(path, _parse_instances)


def _parse_instances(path: Path):
    try:
        dataset = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MimlensError(f"{path} is not JSON: {err}") from None
    return coco_index(dataset, str(path))


class CocoInstances(Dataset):
    """Images of a COCO instances index with torchvision-style targets (see the module docstring).

    Args:
        coco: the pycocotools ``COCO`` index (the evaluation's ground truth).
        image_dir: folder of the ``file_name`` entries.
        category_ids: the categories labels 1…K stand for (default: this index's, sorted); give the training
            set's to an evaluation set so that both share one numbering.

    Items: ``image`` (3, H, W) in [0, 1], ``boxes`` (N, 4) x1y1x2y2, ``labels`` (N,), ``image_id``.
    """

    def __init__(self, coco, image_dir: str | Path, category_ids: list[int] | None = None) -> None:
        self.coco = coco
        self.image_ids = np.array(sorted(coco.getImgIds()), dtype=np.int64)
        self.category_ids = sorted(coco.getCatIds()) if category_ids is None else list(category_ids)
        unknown = sorted(set(coco.getCatIds()) - set(self.category_ids))
        if unknown:
            raise MimlensError(f"categories {unknown} of this set are not among the training categories "
                               f"{self.category_ids}")
        self.label_of = {cat: k + 1 for k, cat in enumerate(self.category_ids)}
        self.image_dir = Path(image_dir)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = self.coco.imgs[int(self.image_ids[index])]
        path = self.image_dir / info["file_name"]
        image = load_image(path)
        height, width = int(info["height"]), int(info["width"])
        if tuple(image.shape[-2:]) != (height, width):
            raise MimlensError(f"{path} is {image.shape[-1]}x{image.shape[-2]} pixels but the annotation file "
                               f"says {width}x{height}")
        anns = [a for a in self.coco.imgToAnns.get(info["id"], []) if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes = box_convert(boxes, "xywh", "xyxy")
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        labels = torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return {"image": image, "boxes": boxes[keep], "labels": labels[keep], "image_id": int(info["id"])}


def letterbox(image: torch.Tensor, size: int, fill: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale the longer side of a (3, H, W) image to ``size`` and pad to ``size`` × ``size`` with ``fill``.

    Returns the image and the per-axis scale (sx, sy, sx, sy) that multiplies x1y1x2y2 boxes.
    """
    height, width = image.shape[-2:]
    factor = size / max(height, width)
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    out = torch.tensor(fill, dtype=image.dtype).view(3, 1, 1).repeat(1, size, size)
    out[:, :new_h, :new_w] = resize(image, (new_h, new_w))
    return out, torch.tensor([new_w / width, new_h / height] * 2, dtype=torch.float32)


class DetectionTransform:
    """Item of :class:`CocoInstances` → fixed-shape tensors that batch with the default collate.

    Output: ``image`` (3, size, size), ``boxes`` (max_objects, 4) x1y1x2y2 in input pixels, ``labels``
    (max_objects,) with 0 in unused slots, ``scale`` (4,) from :func:`letterbox`, ``image_id``. With ``flip``
    the image and its boxes are mirrored left-right with probability ½ (torch RNG, so the engine's
    per-sample seeding makes it reproducible).
    """

    def __init__(self, size: int, fill: tuple[float, ...], max_objects: int = 100, flip: bool = False) -> None:
        self.size, self.fill, self.max_objects, self.flip = int(size), tuple(fill), int(max_objects), flip

    def __call__(self, item: dict[str, Any]) -> dict[str, torch.Tensor]:
        image, boxes, labels = item["image"], item["boxes"], item["labels"]
        if len(labels) > self.max_objects:
            raise MimlensError(f"image {item['image_id']} has {len(labels)} objects, more than max_objects "
                               f"({self.max_objects}); raise det.max_objects")
        if self.flip and bool(torch.rand(()) < 0.5):
            width = image.shape[-1]
            image = image.flip(-1)
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        image, scale = letterbox(image, self.size, self.fill)
        padded_boxes = torch.zeros(self.max_objects, 4)
        padded_labels = torch.zeros(self.max_objects, dtype=torch.int64)
        padded_boxes[: len(labels)] = boxes * scale
        padded_labels[: len(labels)] = labels
        return {"image": image, "boxes": padded_boxes, "labels": padded_labels, "scale": scale,
                "image_id": torch.tensor(item["image_id"])}


def detection_set(root: str | Path, split: str, category_ids: list[int] | None = None) -> CocoInstances:
    """The ``split`` of a COCO-style folder.

    Layout: ``ROOT/annotations/instances_<split>*.json`` (or ``ROOT/<split>.json``) with images in
    ``ROOT/<name>/`` where ``<name>`` is the JSON's suffix (``instances_val2017.json`` → ``val2017/``), or in
    ``ROOT/<split>/`` or ``ROOT/images/``; ``val`` falls back to ``test``. This is also the layout of
    ``mimlens.data.export.export_coco_instances``.
    """
    root = Path(root).expanduser()
    ann = None
    for name in (split, "test") if split == "val" else (split,):
        found = sorted((root / "annotations").glob(f"instances_{name}*.json")) + [root / f"{name}.json"]
        ann = next((p for p in found if p.is_file()), None)
        if ann is not None:
            break
    if ann is None:
        raise MimlensError(f"no COCO instances file for split {split!r} in {root} (expected "
                           f"{root / 'annotations' / f'instances_{split}.json'} or {root / f'{split}.json'})")
    stem = ann.stem.removeprefix("instances_")
    image_dir = next((d for d in (root / stem, root / split, root / "images") if d.is_dir()), None)
    if image_dir is None:
        raise MimlensError(f"no image folder for {ann} (looked for {root / stem}, {root / split}, {root / 'images'})")
    return CocoInstances(load_instances(ann), image_dir, category_ids=category_ids)


def export_synthetic(num_train: int, num_eval: int, img_size: int, seed: int, difficulty: dict[str, Any],
                     out_dir: str | Path) -> Path:
    """Synthetic scenes as a COCO instances folder: ``num_train`` of the train split and ``num_eval`` of the
    (disjoint) val split, through ``mimlens.data.export.export_coco_instances``; returns ``out_dir``."""
    from mimlens.data.export import export_coco_instances
    from mimlens.data.synthetic import SyntheticScenes

    for split, num in (("train", num_train), ("val", num_eval)):
        scenes = SyntheticScenes(num, img_size, seed, split=split, **difficulty)
        export_coco_instances(scenes, out_dir, split=split, masks=False)
    return Path(out_dir)
