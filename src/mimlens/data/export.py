"""Write synthetic scenes and sequences in the field's standard formats, so that every reader of real data
(COCO keypoints, COCO instances, NYUv2-style depth pairs, LaSOT) also runs on the embedded default.

Layouts (``split`` names the subset, as in COCO's ``train2017``):
- COCO keypoints: ``OUT/annotations/person_keypoints_<split>.json`` + ``OUT/<split>/<id:06d>.png``; one
  instance per image (the main object) with its amodal box, area = its visible pixel count, 5 keypoints
  ``x, y, v`` (``v = 0`` written as ``0, 0, 0``, COCO's rule), a skeleton joining them round the outline
  (top, upper right, lower right, lower left, upper left) and per-keypoint OKS ``sigmas`` in the
  category (COCO's defaults are for 17 person keypoints; give these to ``COCOeval.params.kpt_oks_sigmas``).
- COCO instances: ``OUT/annotations/instances_<split>.json`` + the same images; every visible object with
  its visible box, area and (optionally) its visible mask as compressed RLE; categories = the 8 shapes.
- depth pairs (NYUv2 style): ``OUT/rgb/<id:06d>.png`` + ``OUT/depth/<id:06d>.png`` (16-bit, millimetres)
  or ``.npy`` (float32 metres).
- LaSOT: ``OUT/<shape>/<shape>-<n>/img/00000001.jpg`` …, ``groundtruth.txt`` (one ``x,y,w,h`` line per
  frame), ``full_occlusion.txt`` and ``out_of_view.txt`` (one line of comma-separated 0/1), ``nlp.txt``.

Coordinates keep the synthetic convention: pixel ``(row, col)`` spans ``[col, col + 1) x [row, row + 1)``.
Images are written as 8-bit, so they differ from the float tensors by at most half a grey level.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mimlens.data.synthetic import KEYPOINT_NAMES, SHAPES, TEXTURES
from mimlens.errors import MimlensError
from mimlens.io import save_json, save_text

__all__ = ["export_coco_instances", "export_coco_keypoints", "export_depth_pairs", "export_lasot"]

#: OKS sigma of every synthetic keypoint: the mean of COCO's 17 person-keypoint sigmas.
SYNTHETIC_OKS_SIGMA = 0.067
DEPTH_PNG_SCALE = 1000.0  # 16-bit depth PNGs hold millimetres


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] → (H, W, 3) uint8."""
    return (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _write_image(image: torch.Tensor, path: Path, quality: int = 95) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_to_uint8(image)).save(path, quality=quality)


def _items(dataset: Dataset) -> Iterable[tuple[int, dict[str, torch.Tensor]]]:
    if len(dataset) == 0:
        raise MimlensError("nothing to export: the dataset is empty")
    for index in range(len(dataset)):
        yield index, dataset[index]


def _image_entry(index: int, item: dict[str, torch.Tensor], image_format: str) -> dict:
    height, width = item["image"].shape[-2:]
    return {"id": index, "file_name": f"{index:06d}.{image_format}", "height": int(height), "width": int(width)}


def _coco_images(scenes: Dataset, out_dir: Path, split: str, image_format: str, images: list[dict]
                 ) -> Iterable[tuple[int, dict[str, torch.Tensor]]]:
    """Every scene's image written to ``out_dir/split`` and its COCO ``images`` entry appended; yields the
    scenes (index = image id) for their annotations."""
    for index, item in _items(scenes):
        entry = _image_entry(index, item, image_format)
        _write_image(item["image"], out_dir / split / entry["file_name"])
        images.append(entry)
        yield index, item


def export_coco_keypoints(
    scenes: Dataset, out_dir: str | Path, *, split: str = "train", image_format: str = "png",
    oks_sigma: float = SYNTHETIC_OKS_SIGMA,
) -> Path:
    """Scenes as a COCO keypoint file plus images (layout in the module docstring); returns the JSON path."""
    out_dir = Path(out_dir)
    images, annotations = [], []
    for index, item in _coco_images(scenes, out_dir, split, image_format, images):
        keypoints = item["keypoints"].double().clone()
        keypoints[keypoints[:, 2] == 0] = 0
        annotations.append({
            "id": index + 1,
            "image_id": index,
            "category_id": 1,
            "iscrowd": 0,
            "bbox": item["box"].tolist(),
            "area": float((item["segmentation"] == 1).sum()),
            "keypoints": keypoints.flatten().tolist(),
            "num_keypoints": int((keypoints[:, 2] > 0).sum()),
        })
    category = {
        "id": 1, "name": "object", "supercategory": "shape", "keypoints": list(KEYPOINT_NAMES),
        "skeleton": [[k, k % len(KEYPOINT_NAMES) + 1] for k in range(1, len(KEYPOINT_NAMES) + 1)],  # the outline
        "sigmas": [oks_sigma] * len(KEYPOINT_NAMES),
    }
    path = out_dir / "annotations" / f"person_keypoints_{split}.json"
    save_json({"images": images, "annotations": annotations, "categories": [category]}, path)
    return path


def export_coco_instances(
    scenes: Dataset, out_dir: str | Path, *, split: str = "train", masks: bool = True, image_format: str = "png"
) -> Path:
    """Every visible object of every scene as a COCO instances file plus images; returns the JSON path."""
    from pycocotools import mask as mask_utils

    out_dir = Path(out_dir)
    images, annotations = [], []
    for index, item in _coco_images(scenes, out_dir, split, image_format, images):
        segmentation = item["segmentation"].numpy()
        for slot, (box, cls) in enumerate(zip(item["boxes"].tolist(), item["classes"].tolist(), strict=True)):
            if cls < 0:
                continue
            visible = segmentation == slot + 1
            annotation = {
                "id": len(annotations) + 1, "image_id": index, "category_id": cls + 1, "iscrowd": 0,
                "bbox": box, "area": float(visible.sum()),
            }
            if masks:
                rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
                annotation["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            annotations.append(annotation)
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(SHAPES)]
    path = out_dir / "annotations" / f"instances_{split}.json"
    save_json({"images": images, "annotations": annotations, "categories": categories}, path)
    return path


def export_depth_pairs(
    scenes: Dataset, out_dir: str | Path, *, depth_format: str = "png", image_format: str = "png"
) -> Path:
    """RGB + depth pairs in ``OUT/rgb`` and ``OUT/depth``: 16-bit PNG in millimetres (``depth_format="png"``,
    depths above 65.535 m saturate) or float32 ``.npy`` in metres. Returns ``out_dir``."""
    if depth_format not in ("png", "npy"):
        raise MimlensError(f"depth_format must be 'png' or 'npy', got {depth_format!r}")
    out_dir = Path(out_dir)
    (out_dir / "depth").mkdir(parents=True, exist_ok=True)
    for index, item in _items(scenes):
        _write_image(item["image"], out_dir / "rgb" / f"{index:06d}.{image_format}")
        depth = item["depth"][0].numpy()
        if depth_format == "npy":
            np.save(out_dir / "depth" / f"{index:06d}.npy", depth.astype(np.float32))
        else:
            millimetres = np.clip(np.round(depth * DEPTH_PNG_SCALE), 0, 65535).astype(np.uint16)
            Image.fromarray(millimetres).save(out_dir / "depth" / f"{index:06d}.png")
    return out_dir


def _flags(values: torch.Tensor) -> str:
    return ",".join(str(int(v)) for v in values.tolist()) + "\n"


def export_lasot(
    sequences: Dataset, out_dir: str | Path, *, image_format: str = "jpg", quality: int = 95
) -> list[Path]:
    """Sequences in LaSOT's layout, named ``<shape>-<n>`` (n counts from 1 per shape); returns their folders."""
    out_dir = Path(out_dir)
    counts: dict[str, int] = {}
    folders = []
    for _, item in _items(sequences):
        shape = SHAPES[int(item["label"])]
        counts[shape] = counts.get(shape, 0) + 1
        folder = out_dir / shape / f"{shape}-{counts[shape]}"
        for t, frame in enumerate(item["frames"], start=1):
            _write_image(frame, folder / "img" / f"{t:08d}.{image_format}", quality)
        save_text("".join(",".join(f"{v:g}" for v in box) + "\n" for box in item["boxes"].tolist()),
                  folder / "groundtruth.txt")
        save_text(_flags(item["full_occlusion"]), folder / "full_occlusion.txt")
        save_text(_flags(item["out_of_view"]), folder / "out_of_view.txt")
        texture = TEXTURES[int(item["fine_label"]) % len(TEXTURES)]
        save_text(f"a {texture} {shape} moving among other shapes\n", folder / "nlp.txt")
        folders.append(folder)
    return folders
