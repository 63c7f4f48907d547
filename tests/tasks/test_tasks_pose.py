import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.cocoeval import COCOeval

from mimlens.errors import MimlensError
from mimlens.tasks.pose import (
    CocoKeypointCrops,
    coco_keypoint_eval,
    decode_heatmaps,
    flip_heatmaps,
    from_heatmap,
    gaussian_heatmaps,
    has_labelled_keypoints,
    keypoint_results,
    keypoint_sigmas,
    load_coco,
    person_crop,
    to_heatmap,
)

NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear"]
SIGMAS = [0.1] * 5


def _toy_coco(path, instances, sigmas=True):
    """instances: list of (image_id, bbox, keypoints [(x, y, v)] * 5)."""
    cat = {"id": 1, "name": "shape", "keypoints": NAMES, "skeleton": []}
    if sigmas:
        cat["sigmas"] = SIGMAS
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 96, "height": 80}
                   for i in sorted({inst[0] for inst in instances})],
        "categories": [cat],
        "annotations": [
            {"id": n + 1, "image_id": img, "category_id": 1, "bbox": list(bbox), "area": bbox[2] * bbox[3],
             "iscrowd": 0, "keypoints": [float(v) for kp in kps for v in kp],
             "num_keypoints": sum(1 for kp in kps if kp[2] > 0)}
            for n, (img, bbox, kps) in enumerate(instances)
        ],
    }
    path.write_text(json.dumps(data))
    return load_coco(path)


INSTANCES = [
    (1, (10, 12, 40, 36), [(20, 20, 2), (25, 18, 2), (35, 18, 1), (22, 30, 2), (40, 40, 0)]),
    (1, (50, 30, 30, 40), [(60, 40, 2), (62, 38, 2), (70, 38, 2), (58, 55, 2), (75, 60, 2)]),
    (2, (5, 5, 60, 60), [(20, 30, 2), (30, 20, 2), (50, 20, 2), (15, 50, 1), (55, 50, 2)]),
]


def _results(instances, shift=(0.0, 0.0), scores=None):
    return [{"image_id": img, "category_id": 1, "score": 1.0 if scores is None else scores[n],
             "keypoints": [v for x, y, _ in kps for v in (x + shift[0], y + shift[1], 1.0)]}
            for n, (img, _, kps) in enumerate(instances)]


def test_perfect_predictions_give_ap_one(tmp_path):
    coco = _toy_coco(tmp_path / "kp.json", INSTANCES)
    out = coco_keypoint_eval(coco, _results(INSTANCES))
    assert out["ap"] == pytest.approx(1.0) and out["ar"] == pytest.approx(1.0) and out["ap50"] == pytest.approx(1.0)


def test_single_instance_ap_from_hand_computed_oks(tmp_path):
    # area 400, sigma 0.1: e = d² / (2 · 400 · (2·0.1)²) = d² / 32; OKS = exp(-e) = 0.72 lies in [0.70, 0.75)
    d = math.sqrt(-32 * math.log(0.72))
    inst = [(1, (0, 0, 20, 20), [(2 + 3 * i, 5, 2) for i in range(5)])]
    coco = _toy_coco(tmp_path / "kp.json", inst)
    out = coco_keypoint_eval(coco, _results(inst, shift=(d, 0.0)))
    assert out["ap"] == pytest.approx(5 / 10)  # matched at OKS thresholds 0.50 ... 0.70
    assert out["ap50"] == pytest.approx(1.0) and out["ap75"] == pytest.approx(0.0)


def test_perturbed_predictions_match_pycocotools_directly(tmp_path):
    coco = _toy_coco(tmp_path / "kp.json", INSTANCES)
    rng = np.random.default_rng(0)
    results = _results(INSTANCES, scores=[0.9, 0.5, 0.7])
    for r in results:
        r["keypoints"] = [v + (rng.normal(0, 3) if i % 3 != 2 else 0) for i, v in enumerate(r["keypoints"])]
    ours = coco_keypoint_eval(coco, results)
    with contextlib.redirect_stdout(io.StringIO()):
        direct = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iouType="keypoints")
        direct.params.kpt_oks_sigmas = np.array(SIGMAS)
        direct.evaluate()
        direct.accumulate()
        direct.summarize()
    assert ours["ap"] == pytest.approx(direct.stats[0]) and ours["ar"] == pytest.approx(direct.stats[5])
    assert 0.0 < ours["ap"] < 1.0


def test_sigmas_required_for_non_coco_keypoints(tmp_path):
    coco = _toy_coco(tmp_path / "kp.json", INSTANCES, sigmas=False)
    with pytest.raises(MimlensError, match="sigmas"):
        keypoint_sigmas(coco)
    assert keypoint_sigmas(coco, SIGMAS).tolist() == SIGMAS
    with pytest.raises(MimlensError, match="3 OKS sigmas"):
        keypoint_sigmas(coco, [0.1] * 3)


def test_person_crop_keeps_centre_and_aspect():
    x0, y0, w, h = person_crop((10, 20, 40, 20), aspect=1.0)
    assert (x0 + w / 2, y0 + h / 2) == (30, 30) and w == h == 50
    x0, y0, w, h = person_crop((0, 0, 10, 40), aspect=0.75)
    assert (w, h) == pytest.approx((37.5, 50)) and (x0 + w / 2, y0 + h / 2) == pytest.approx((5, 20))


def test_encode_decode_round_trip_within_quarter_pixel():
    box, size = (3.0, -4.0, 48.0, 64.0), (32, 24)
    g = torch.Generator().manual_seed(0)
    points = torch.rand(40, 2, generator=g, dtype=torch.float64) * torch.tensor([40.0, 56.0]) + torch.tensor([7, 0])
    coords = to_heatmap(points, box, size)
    heatmaps, weight = gaussian_heatmaps(coords, torch.ones(40, dtype=torch.float64), size, sigma=2.0)
    decoded, maxvals = decode_heatmaps(heatmaps[None])
    assert (decoded[0] - coords).abs().max() <= 0.25 + 1e-9
    assert torch.allclose(from_heatmap(coords, box, size), points)
    assert (maxvals > 0.88).all() and weight.all()


def _peak(x, y, size=(6, 7)):
    """A heatmap with maximum 1 at (x, y): left 0.2, right 0.5, above 0.6, below 0.3 where they exist."""
    hm = torch.zeros(size, dtype=torch.float64)
    hm[y, x] = 1.0
    for dx, dy, v in ((-1, 0, 0.2), (1, 0, 0.5), (0, -1, 0.6), (0, 1, 0.3)):
        if 0 <= x + dx < size[1] and 0 <= y + dy < size[0]:
            hm[y + dy, x + dx] = v
    return hm


def test_quarter_pixel_shift_only_away_from_the_two_outer_rows_and_columns():
    # W = 7, H = 6: the shift applies only when 1 < x < 6 and 1 < y < 5 (HRNet get_final_preds), in both axes
    cases = {(3, 3): (3.25, 2.75), (5, 4): (5.25, 3.75), (2, 2): (2.25, 1.75),
             (1, 3): (1, 3), (3, 1): (3, 1), (0, 3): (0, 3), (6, 3): (6, 3), (3, 0): (3, 0), (3, 5): (3, 5),
             (6, 5): (6, 5), (0, 0): (0, 0), (1, 1): (1, 1)}
    heatmaps = torch.stack([_peak(x, y) for x, y in cases])[None]
    coords, maxvals = decode_heatmaps(heatmaps)
    assert coords[0].tolist() == [list(v) for v in cases.values()]
    assert maxvals[0].tolist() == [1.0] * len(cases)


def test_non_positive_maximum_decodes_to_the_origin():
    hm = _peak(3, 3) - 2.0  # maximum -1 at (3, 3)
    coords, maxvals = decode_heatmaps(torch.stack([hm, _peak(3, 3)])[None])
    assert coords[0].tolist() == [[0.0, 0.0], [3.25, 2.75]] and maxvals[0].tolist() == [-1.0, 1.0]


def _hrnet_decode(heatmaps):
    """HRNet get_max_preds + the POST_PROCESS branch of get_final_preds, restated per keypoint."""
    out = np.zeros(heatmaps.shape[:2] + (2,))
    h, w = heatmaps.shape[2:]
    for n, k in np.ndindex(*heatmaps.shape[:2]):
        hm = heatmaps[n, k]
        i = int(np.argmax(hm))
        x, y = (float(i % w), float(i // w)) if hm.max() > 0 else (0.0, 0.0)
        px, py = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
        if 1 < px < w - 1 and 1 < py < h - 1:
            x += 0.25 * np.sign(hm[py, px + 1] - hm[py, px - 1])
            y += 0.25 * np.sign(hm[py + 1, px] - hm[py - 1, px])
        out[n, k] = x, y
    return out


def test_decoding_matches_hrnet_on_random_heatmaps():
    g = torch.Generator().manual_seed(0)
    heatmaps = torch.rand(4, 30, 5, 6, generator=g, dtype=torch.float64) - 0.1
    heatmaps[0, :5] -= 1.0  # some non-positive maxima
    coords, _ = decode_heatmaps(heatmaps)
    assert np.array_equal(coords.numpy(), _hrnet_decode(heatmaps.numpy()))


def test_boxes_without_labelled_keypoints_are_skipped_and_counted(tmp_path):
    none, outside = [(0, 0, 0)] * 5, [(-5, 50, 0)] * 5  # COCO's unlabelled keypoints; unlabelled with coordinates
    coco = _toy_coco(tmp_path / "kp.json", [*INSTANCES, (2, (40, 40, 20, 20), none), (2, (0, 0, 0, 10), none),
                                            (1, (60, 5, 20, 20), outside)])
    assert [has_labelled_keypoints(a) for a in coco.loadAnns(coco.getAnnIds())] == [True] * 3 + [False] * 3
    data = CocoKeypointCrops(coco, tmp_path, (64, 64), (16, 16))
    assert len(data) == 3 and data.skipped_no_keypoints == 2  # the zero-width box is never a crop
    every = CocoKeypointCrops(coco, tmp_path, (64, 64), (16, 16), require_keypoints=False)
    assert len(every) == 5 and every.skipped_no_keypoints == 0


def test_out_of_crop_and_invisible_keypoints_get_zero_weight():
    coords = torch.tensor([[3.0, 3.0], [-0.6, 2.0], [2.0, 7.6], [1.0, 1.0]], dtype=torch.float64)
    heatmaps, weight = gaussian_heatmaps(coords, torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64), (8, 8), 1.0)
    assert weight.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert heatmaps[0, 3, 3] == 1.0 and heatmaps[1:].abs().sum() == 0


def test_flip_of_targets_equals_targets_of_flipped_crop():
    width, box, size = 96.0, (10.0, 5.0, 40.0, 40.0), (16, 16)
    pairs = [(1, 2), (3, 4)]
    points = torch.tensor([[20, 20], [25, 18], [35, 18], [22, 30], [40, 40]], dtype=torch.float64)
    heatmaps, _ = gaussian_heatmaps(to_heatmap(points, box, size), torch.ones(5, dtype=torch.float64), size, 1.5)
    mirrored = points.clone()
    mirrored[:, 0] = width - mirrored[:, 0]
    mirrored = mirrored[[0, 2, 1, 4, 3]]  # a mirrored left eye is the right eye
    mirrored_box = (width - box[0] - box[2], box[1], box[2], box[3])
    flipped, _ = gaussian_heatmaps(to_heatmap(mirrored, mirrored_box, size), torch.ones(5, dtype=torch.float64),
                                   size, 1.5)
    assert torch.allclose(flip_heatmaps(flipped[None], pairs)[0], heatmaps)


def test_ground_truth_heatmaps_through_the_reader_give_ap_one(tmp_path):
    coco = _toy_coco(tmp_path / "kp.json", INSTANCES)
    for image_id in (1, 2):
        Image.fromarray(np.zeros((80, 96, 3), dtype=np.uint8)).save(tmp_path / f"{image_id}.png")
    data = CocoKeypointCrops(coco, tmp_path, (64, 64), (16, 16), sigma=1.5, require_keypoints=False)
    assert len(data) == 3 and data.flip_pairs() == [(1, 2), (3, 4)]
    batch = torch.utils.data.default_collate([data[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 64, 64) and batch["target"].shape == (3, 5, 16, 16)
    assert batch["weight"][0].tolist() == [1, 1, 1, 1, 0]  # v = 0 for the last keypoint of the first instance
    results = keypoint_results(batch["target"], batch)
    assert coco_keypoint_eval(coco, results)["ap"] == pytest.approx(1.0)
