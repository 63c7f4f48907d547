import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mimlens.data.export import export_coco_instances, export_coco_keypoints, export_depth_pairs, export_lasot
from mimlens.data.synthetic import KEYPOINT_NAMES, SHAPES, SyntheticScenes, SyntheticSequences
from mimlens.errors import MimlensError

# pycocotools' own decode passes copy=False to numpy 2 (its warning, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def scenes():
    return SyntheticScenes(12, 48, seed=4)


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def _evaluate(gt: COCO, results: list[dict], iou_type: str, sigmas=None) -> float:
    dt = _quiet(gt.loadRes, results)
    evaluator = COCOeval(gt, dt, iouType=iou_type)
    if sigmas is not None:
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas)
    _quiet(evaluator.evaluate)
    _quiet(evaluator.accumulate)
    _quiet(evaluator.summarize)
    return float(evaluator.stats[0])


def test_coco_keypoints_round_trip(scenes, tmp_path):
    path = export_coco_keypoints(scenes, tmp_path, split="val")
    assert path == tmp_path / "annotations" / "person_keypoints_val.json"
    gt = _quiet(COCO, str(path))
    category = gt.loadCats(1)[0]
    assert category["keypoints"] == list(KEYPOINT_NAMES) and len(category["sigmas"]) == 5
    assert category["skeleton"] == [[1, 2], [2, 3], [3, 4], [4, 5], [5, 1]]
    assert sorted(gt.getImgIds()) == list(range(len(scenes)))
    for index in range(len(scenes)):
        item = scenes[index]
        (ann,) = gt.loadAnns(gt.getAnnIds(imgIds=index))
        keypoints = np.array(ann["keypoints"]).reshape(5, 3)
        assert np.allclose(keypoints, item["keypoints"].numpy(), atol=1e-5)  # v = 0 only for a missing landmark
        assert ann["bbox"] == item["box"].tolist() and ann["num_keypoints"] == int((keypoints[:, 2] > 0).sum()) >= 3
        info = gt.loadImgs(index)[0]
        pixels = np.asarray(Image.open(tmp_path / "val" / info["file_name"]))
        assert pixels.shape == (48, 48, 3)
        assert np.abs(pixels / 255.0 - item["image"].permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-6
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in gt.loadAnns(gt.getAnnIds())]
    assert _evaluate(gt, results, "keypoints", category["sigmas"]) == pytest.approx(1.0)
    shifted = [dict(r, keypoints=[v + 6.0 * (k % 3 != 2) for k, v in enumerate(r["keypoints"])]) for r in results]
    assert _evaluate(gt, shifted, "keypoints", category["sigmas"]) < 0.5


def test_coco_keypoints_outside_the_image_are_written_as_zeros(tmp_path):
    class Item(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            keypoints = torch.tensor([[5.0, 5.0, 2], [-1.0, 3.0, 0], [6.0, 6.0, 1], [7.0, 7.0, 2], [8.0, 8.0, 2]])
            return {"image": torch.zeros(3, 16, 16), "keypoints": keypoints, "box": torch.tensor([1.0, 1.0, 10, 10]),
                    "segmentation": torch.ones(16, 16, dtype=torch.long)}

    path = export_coco_keypoints(Item(), tmp_path)
    (ann,) = json.loads(path.read_text())["annotations"]
    assert ann["keypoints"][3:6] == [0, 0, 0] and ann["num_keypoints"] == 4 and ann["area"] == 256


def test_coco_instances_round_trip(scenes, tmp_path):
    path = export_coco_instances(scenes, tmp_path)
    gt = _quiet(COCO, str(path))
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == list(SHAPES)
    count = 0
    for index in range(len(scenes)):
        item = scenes[index]
        anns = gt.loadAnns(gt.getAnnIds(imgIds=index))
        present = [k for k, c in enumerate(item["classes"].tolist()) if c >= 0]
        assert len(anns) == len(present)
        for ann, slot in zip(anns, present, strict=True):
            visible = (item["segmentation"] == slot + 1).numpy()
            assert np.array_equal(gt.annToMask(ann), visible)
            assert ann["bbox"] == item["boxes"][slot].tolist() and ann["category_id"] == item["classes"][slot] + 1
            assert ann["area"] == visible.sum()
            count += 1
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "segmentation": a["segmentation"], "score": 1.0} for a in gt.loadAnns(gt.getAnnIds())]
    assert count == len(results)
    assert _evaluate(gt, results, "bbox") == pytest.approx(1.0)
    assert _evaluate(gt, results, "segm") == pytest.approx(1.0)


def test_coco_instances_without_masks(scenes, tmp_path):
    data = json.loads(export_coco_instances(scenes, tmp_path, masks=False).read_text())
    assert data["annotations"] and all("segmentation" not in a for a in data["annotations"])


@pytest.mark.parametrize("depth_format", ["png", "npy"])
def test_depth_pairs_round_trip(scenes, tmp_path, depth_format):
    export_depth_pairs(scenes, tmp_path, depth_format=depth_format)
    assert len(list((tmp_path / "rgb").iterdir())) == len(scenes)
    for index in (0, 5):
        depth = scenes[index]["depth"][0].numpy()
        path = tmp_path / "depth" / f"{index:06d}.{depth_format}"
        if depth_format == "npy":
            assert np.array_equal(np.load(path), depth)
        else:
            stored = np.asarray(Image.open(path))
            assert stored.dtype == np.uint16
            assert np.abs(stored / 1000.0 - depth).max() <= 0.0005 + 1e-6
    with pytest.raises(MimlensError, match="depth_format"):
        export_depth_pairs(scenes, tmp_path, depth_format="exr")


def test_lasot_layout_round_trip(tmp_path):
    sequences = SyntheticSequences(3, length=6, img_size=32, seed=1)
    folders = export_lasot(sequences, tmp_path)
    assert len(folders) == 3
    for index, folder in enumerate(folders):
        item = sequences[index]
        shape = SHAPES[int(item["label"])]
        assert folder.parent == tmp_path / shape and folder.name.startswith(f"{shape}-")
        frames = sorted((folder / "img").iterdir())
        assert [f.name for f in frames] == [f"{t:08d}.jpg" for t in range(1, 7)]
        assert Image.open(frames[0]).size == (32, 32)
        rows = [[float(v) for v in line.split(",")] for line in (folder / "groundtruth.txt").read_text().splitlines()]
        assert rows == item["boxes"].tolist()
        for name, key in (("full_occlusion.txt", "full_occlusion"), ("out_of_view.txt", "out_of_view")):
            lines = (folder / name).read_text().splitlines()
            assert len(lines) == 1 and [int(v) for v in lines[0].split(",")] == item[key].int().tolist()
    names = sorted(f.name for f in folders)
    assert len(set(names)) == 3
