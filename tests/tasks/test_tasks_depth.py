import math

import numpy as np
import pytest
import torch
from PIL import Image

from mimlens.errors import MimlensError
from mimlens.tasks.depth import DepthMetrics, DepthPairs, crop_mask, read_depth, silog_loss


def _metrics(pred, gt, **kwargs):
    acc = DepthMetrics(min_depth=kwargs.pop("min_depth", 1e-3), max_depth=kwargs.pop("max_depth", 10.0), **kwargs)
    acc.update(torch.tensor(pred, dtype=torch.float32), torch.tensor(gt, dtype=torch.float32))
    return acc.compute()


def test_depth_metrics_hand_computed():
    # valid pixels (pred, gt): (1, 1), (3, 2), (2, 4); the fourth has gt 0 and is excluded.
    m = _metrics([[[1.0, 3.0], [2.0, 5.0]]], [[[1.0, 2.0], [4.0, 0.0]]])
    e = [0.0, math.log(1.5), math.log(0.5)]
    mean_e = sum(e) / 3
    mean_e2 = sum(x * x for x in e) / 3
    expected = {
        "d1": 1 / 3,  # ratios 1, 1.5, 2
        "d2": 2 / 3,  # 1.5 < 1.5625
        "d3": 2 / 3,  # 2 > 1.953125
        "abs_rel": (0 + 1 / 2 + 2 / 4) / 3,
        "sq_rel": (0 + 1 / 2 + 4 / 4) / 3,
        "rmse": math.sqrt((0 + 1 + 4) / 3),
        "rmse_log": math.sqrt(mean_e2),
        "log10": (abs(math.log10(1.5)) + abs(math.log10(0.5))) / 3,
        "silog": 100 * math.sqrt(mean_e2 - mean_e**2),
    }
    assert m == pytest.approx(expected, rel=1e-12)


def test_depth_metrics_average_per_image_not_per_pixel():
    # image A: one valid pixel, abs_rel 1; image B: three exact pixels, abs_rel 0.
    pred = [[[2.0, 9.0], [9.0, 9.0]], [[1.0, 2.0], [3.0, 9.0]]]
    gt = [[[1.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 0.0]]]
    m = _metrics(pred, gt)
    assert m["abs_rel"] == pytest.approx(0.5)  # pooled over the 4 pixels it would be 0.25
    assert m["d1"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(0.5)


def test_depth_metrics_batch_equals_single_images_and_merge():
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(5, 6, 7, generator=g) * 12
    pred = torch.rand(5, 6, 7, generator=g) * 12
    whole = DepthMetrics(0.5, 10.0)
    whole.update(pred, gt)
    parts = [DepthMetrics(0.5, 10.0) for _ in range(5)]
    for i, part in enumerate(parts):
        part.update(pred[i:i + 1], gt[i:i + 1, None])
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    assert merged.compute() == pytest.approx(whole.compute(), rel=1e-12)
    restored = DepthMetrics(0.5, 10.0)
    restored.load_state_dict(whole.state_dict())
    assert restored.compute() == whole.compute()


def test_depth_range_and_prediction_clamp():
    # gt 12 is above max_depth and excluded; the prediction 50 is clamped to max_depth 10 before comparing.
    m = _metrics([[[50.0, 1.0]]], [[[5.0, 12.0]]], max_depth=10.0)
    assert m["abs_rel"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(5.0)


def test_depth_crop_excludes_pixels_outside():
    gt = torch.full((1, 480, 640), 2.0)
    pred = torch.full((1, 480, 640), 2.0)
    pred[0, :45] = 4.0  # rows above the Eigen crop are wrong but ignored
    acc = DepthMetrics(1e-3, 10.0, crop="eigen")
    acc.update(pred, gt)
    assert acc.compute()["abs_rel"] == 0.0
    acc = DepthMetrics(1e-3, 10.0, crop="none")
    acc.update(pred, gt)
    assert acc.compute()["abs_rel"] == pytest.approx(45 / 480)


def test_crop_masks_known_rows_and_columns():
    eigen = crop_mask(480, 640, "eigen")
    rows, cols = eigen.any(1).nonzero()[:, 0], eigen.any(0).nonzero()[:, 0]
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (45, 470, 41, 600)
    garg = crop_mask(375, 1242, "garg")  # Monodepth's KITTI crop [153, 371, 44, 1197]
    rows, cols = garg.any(1).nonzero()[:, 0], garg.any(0).nonzero()[:, 0]
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (153, 371, 44, 1197)
    assert int(garg.sum()) == (371 - 153) * (1197 - 44)
    with pytest.raises(MimlensError, match="unknown depth crop"):
        crop_mask(4, 4, "nyu")


def test_no_valid_pixel_is_an_error():
    acc = DepthMetrics(1e-3, 10.0)
    acc.update(torch.ones(1, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(MimlensError, match="no image"):
        acc.compute()


def test_silog_loss_matches_formula_and_ignores_invalid():
    pred = torch.tensor([[1.0, 3.0, 2.0, 7.0]])
    gt = torch.tensor([[1.0, 2.0, 4.0, 0.0]])
    valid = gt > 0
    e = torch.tensor([0.0, math.log(1.5), math.log(0.5)], dtype=torch.float64)
    expected = 10 * math.sqrt(float((e**2).mean() - 0.85 * e.mean() ** 2))
    assert float(silog_loss(pred, gt, valid)) == pytest.approx(expected, rel=1e-6)
    assert float(silog_loss(gt.clamp(min=1), gt.clamp(min=1), valid)) == pytest.approx(1e-5, abs=1e-5)


def test_silog_loss_is_the_mean_of_per_image_losses():
    torch.manual_seed(0)
    pred, gt = torch.rand(4, 1, 5, 6) + 0.5, torch.rand(4, 1, 5, 6) + 0.5
    valid = torch.rand(4, 1, 5, 6) > 0.3
    valid[3] = False  # an image without valid pixels counts 0
    per_image = [float(silog_loss(pred[i:i + 1], gt[i:i + 1], valid[i:i + 1])) for i in range(3)] + [0.0]
    assert float(silog_loss(pred, gt, valid)) == pytest.approx(sum(per_image) / 4, rel=1e-6)
    halves = (silog_loss(pred[:2], gt[:2], valid[:2]) + silog_loss(pred[2:], gt[2:], valid[2:])) / 2
    assert float(halves) == pytest.approx(float(silog_loss(pred, gt, valid)), rel=1e-6)  # split-invariant


def test_read_depth_png_millimetres_and_npy(tmp_path):
    mm = np.array([[1000, 2500], [0, 65535]], dtype=np.uint16)
    Image.fromarray(mm).save(tmp_path / "d.png")
    assert torch.equal(read_depth(tmp_path / "d.png"), torch.tensor([[1.0, 2.5], [0.0, 65.535]]))
    np.save(tmp_path / "d.npy", np.array([[1.5, 2.0]], dtype=np.float64))
    assert torch.equal(read_depth(tmp_path / "d.npy"), torch.tensor([[1.5, 2.0]]))
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(MimlensError, match="16-bit"):
        read_depth(tmp_path / "rgb.png")


def test_depth_pairs_folder_and_list_layouts(tmp_path):
    for sub in ("rgb", "depth"):
        (tmp_path / sub).mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((6, 8, 3), 255, dtype=np.uint8)).save(tmp_path / "rgb" / f"{name}.png")
        Image.fromarray(np.full((6, 8), 1500, dtype=np.uint16)).save(tmp_path / "depth" / f"{name}.png")
    data = DepthPairs(tmp_path, image_size=(4, 4))
    assert len(data) == 2
    item = data[1]
    assert item["image"].shape == (3, 4, 4) and torch.allclose(item["image"], torch.ones(3, 4, 4))
    assert item["depth"].shape == (6, 8) and torch.allclose(item["depth"], torch.full((6, 8), 1.5))
    (tmp_path / "split.txt").write_text("rgb/b.png depth/b.png 518.8\n\n")
    assert len(DepthPairs(tmp_path / "split.txt", (4, 4))) == 1
    (tmp_path / "bad.txt").write_text("rgb/missing.png depth/b.png\n")
    with pytest.raises(MimlensError, match="missing.png"):
        DepthPairs(tmp_path / "bad.txt", (4, 4))
