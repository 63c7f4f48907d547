"""Task data from a ``--data`` spec: ``synthetic[:N]`` (generated, every label at hand) or a folder in the
field's standard layout. Images come out as float RGB in [0, 1]; the task's transform normalises them.

Folder layouts (``split`` is ``train`` or ``val``; ``test`` is accepted for ``val``):
- classification: ``PATH/train/<class>/*.jpg`` and ``PATH/val/<class>/*.jpg`` (ImageFolder; one class list for
  the tree, the sorted union of the class folders of its splits, so a class has the same label in both);
- depth: ``PATH/<split>/`` with ``rgb/`` and ``depth/`` (16-bit PNG in mm or ``.npy`` in m), or a BTS-style
  list file ``PATH/<split>.txt``;
- pose: ``PATH/annotations/person_keypoints_<split>*.json`` (or ``PATH/<split>.json``) with images in
  ``PATH/<split>*/`` (or ``PATH/images/``);
- tracking: ``PATH/<split>/`` holding LaSOT sequence folders (``img/``, ``groundtruth.txt``, …).

Synthetic data: ``N`` training items (sequences for tracking) from the train split and ``num_eval`` from
the val split of :mod:`mimlens.data.synthetic`, so the two never overlap. Synthetic keypoints are scored
with one OKS sigma, :data:`SYNTHETIC_OKS_SIGMA` (the mean of COCO's 17), and the area of an instance is the
pixel count of the object's visible segment (COCO's ``area``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mimlens.errors import MimlensError

SYNTHETIC_OKS_SIGMA = 0.067


def synthetic_count(source: str) -> int | None:
    """N of ``synthetic:N`` (2,048 for bare ``synthetic``), None for a folder."""
    from mimlens.data.spec import parse_data_spec

    spec = parse_data_spec(source, generated=("synthetic",))
    return spec.count


def split_dir(root: Path, split: str) -> Path:
    """``root/split`` (``val`` falls back to ``test``), or an error naming what was looked for."""
    names = [split] + (["test"] if split == "val" else [])
    for name in names:
        if (root / name).exists():
            return root / name
    raise MimlensError(f"data folder {root} has no {' or '.join(names)} split (expected {root / names[0]})")


class _Fields(Dataset):
    """A view of a dataset of dicts with some keys renamed or reshaped."""

    def __init__(self, dataset: Dataset, pick) -> None:
        self.dataset, self.pick = dataset, pick

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.pick(self.dataset[index])


def classification_set(source: str, split: str, img_size: int, seed: int, num: int, difficulty: dict[str, Any],
                       label: str) -> Dataset:
    """Items with ``image`` and ``label_key`` (synthetic: ``label`` or ``fine_label``; folders: ``label``, the
    position of the class folder in :func:`~mimlens.data.folders.tree_classes`, the same in every split)."""
    from mimlens.data import build_dataset
    from mimlens.data.folders import tree_classes

    if synthetic_count(source) is not None:
        return build_dataset(f"synthetic:{num}", img_size=img_size, split=split, seed=seed, **difficulty)
    if label != "label":
        raise MimlensError(f"label {label!r} exists only for synthetic data; image folders give 'label'")
    tree = Path(source).expanduser()
    root = split_dir(tree, split)
    dataset = build_dataset(root, img_size=img_size, seed=seed, classes=tree_classes(tree))
    if split == "train":
        report_untrained_classes(dataset)
    return dataset


def report_untrained_classes(dataset: Dataset) -> None:
    """Print one line naming the tree's classes that have no training image (main process only)."""
    from mimlens import distributed

    present = set(getattr(dataset, "labels", np.zeros(0, dtype=np.int64)).tolist())
    missing = [name for i, name in enumerate(getattr(dataset, "classes", [])) if i not in present]
    if missing and distributed.is_main():
        print(f"note: class(es) {', '.join(missing)} have no image in {dataset.root}; they keep their label "
              "but no model learns them", flush=True)


def report_skipped(dataset: Dataset) -> None:
    """Print the one line about the unreadable files an image folder met, in every process and DataLoader
    worker so far (rank 0 prints; every process calls it), after the passes over it."""
    from mimlens import distributed
    from mimlens.data.folders import skipped_message

    message = skipped_message(dataset)
    if message and distributed.is_main():
        print(message, flush=True)


def depth_set(source: str, split: str, img_size: tuple[int, int], seed: int, num: int,
              difficulty: dict[str, Any]) -> Dataset:
    """Items with ``image`` (model input size) and ``depth`` (H, W) in metres."""
    from mimlens.data.synthetic import SyntheticScenes
    from mimlens.tasks.depth import DepthPairs

    if synthetic_count(source) is not None:
        scenes = SyntheticScenes(num, img_size, seed, split=split, **difficulty)
        return _Fields(scenes, lambda item: {"image": item["image"], "depth": item["depth"][0]})
    root = Path(source).expanduser()
    listed = root / f"{split}.txt"
    return DepthPairs(listed if listed.is_file() else split_dir(root, split), img_size)


def pose_set(source: str, split: str, img_size: int, seed: int, num: int, difficulty: dict[str, Any]
             ) -> tuple[Any, Any, list[float] | None]:
    """(pycocotools COCO index, image loader ``info -> image``, OKS sigmas or None for the file's own)."""
    from mimlens.tasks.images import load_image
    from mimlens.tasks.pose import load_coco

    if synthetic_count(source) is not None:
        from mimlens.data.synthetic import SyntheticScenes

        scenes = SyntheticScenes(num, img_size, seed, split=split, **difficulty)
        coco = synthetic_keypoints_coco(scenes)
        return coco, lambda info: scenes[info["id"]]["image"], None
    root = Path(source).expanduser()
    candidates = sorted((root / "annotations").glob(f"person_keypoints_{split}*.json")) + [root / f"{split}.json"]
    if split == "val":
        candidates += sorted((root / "annotations").glob("person_keypoints_test*.json")) + [root / "test.json"]
    ann = next((p for p in candidates if p.is_file()), None)
    if ann is None:
        raise MimlensError(f"no COCO keypoint file for split {split!r} in {root} (expected "
                           f"{root / 'annotations' / f'person_keypoints_{split}.json'} or {root / f'{split}.json'})")
    coco = load_coco(ann)
    stem = ann.stem.removeprefix("person_keypoints_")
    image_dir = next((d for d in (root / stem, root / split, root / "images") if d.is_dir()), None)
    if image_dir is None:
        raise MimlensError(f"no image folder for {ann} (looked for {root / stem}, {root / split}, {root / 'images'})")
    return coco, lambda info: load_image(image_dir / info["file_name"]), None


def synthetic_keypoints_coco(scenes) -> Any:
    """A pycocotools COCO index of synthetic scenes: one instance per image (the main object), its box, its
    5 keypoints with visibility, area = visible segment pixels, one OKS sigma for every keypoint."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    from mimlens.data.synthetic import KEYPOINT_NAMES

    height, width = scenes.img_size
    images, annotations = [], []
    for i in range(len(scenes)):
        item = scenes[i]
        keypoints = item["keypoints"].double()
        images.append({"id": i, "file_name": f"{i:06d}.png", "height": height, "width": width})
        annotations.append({
            "id": i + 1, "image_id": i, "category_id": 1, "iscrowd": 0,
            "bbox": [float(v) for v in item["box"]],
            "area": float((item["segmentation"] == 1).sum()),
            "keypoints": [float(v) for v in keypoints.flatten()],
            "num_keypoints": int((keypoints[:, 2] > 0).sum()),
        })
    coco = COCO()
    coco.dataset = {
        "images": images, "annotations": annotations, "source": f"synthetic scenes ({scenes.split} split)",
        "categories": [{"id": 1, "name": "object", "keypoints": list(KEYPOINT_NAMES), "skeleton": [],
                        "sigmas": [SYNTHETIC_OKS_SIGMA] * len(KEYPOINT_NAMES)}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def tracking_sequences(source: str, split: str, img_size: int, seed: int, num: int, length: int,
                       difficulty: dict[str, Any]) -> list:
    """:class:`~mimlens.tasks.tracking.TrackingSequence` list (synthetic sequences keep frames in memory)."""
    from mimlens.tasks.tracking import TrackingSequence, find_lasot_sequences

    if synthetic_count(source) is None:
        return find_lasot_sequences(split_dir(Path(source).expanduser(), split))
    from mimlens.data.synthetic import SyntheticSequences

    data = SyntheticSequences(num, length, img_size, seed, split=split, **difficulty)
    out = []
    for i in range(len(data)):
        item = data[i]
        visible = ~(item["full_occlusion"] | item["out_of_view"])
        out.append(TrackingSequence(f"synthetic-{split}-{i:04d}", item["frames"], item["boxes"].double(), visible))
    return out
