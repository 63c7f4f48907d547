import numpy as np
import pytest
import timm
import torch
from PIL import Image

from mimlens.errors import MimlensError
from mimlens.tasks.tracking import (
    OneStreamTracker,
    TrackingMetrics,
    TrackingPairs,
    crop_square,
    decode_boxes,
    find_lasot_sequences,
    sequence_curves,
    track_sequence,
    tracking_loss,
)

GT = torch.tensor([[0, 0, 10, 10]] * 4, dtype=torch.float64)
# IoU 1, 70/130, 100/120, 0; centre errors 0, 3, 1, sqrt(1800) px; normalised 0, 0.3, 0.1, 4.24
PRED = torch.tensor([[0, 0, 10, 10], [3, 0, 10, 10], [0, 0, 10, 12], [30, 30, 10, 10]], dtype=torch.float64)


def test_success_curve_and_precisions_hand_computed():
    success, precision, norm_precision = sequence_curves(PRED, GT)
    expected = [3 / 4] * 11 + [2 / 4] * 6 + [1 / 4] * 3 + [0.0]  # thresholds 0..0.5, 0.55..0.8, 0.85..0.95, 1
    assert success.tolist() == pytest.approx(expected)
    m = TrackingMetrics()
    m.update(PRED, GT)
    out = m.compute()
    assert out["suc"] == pytest.approx(12 / 21)
    assert out["precision"] == pytest.approx(3 / 4)  # errors 0, 3, 1 <= 20 px
    assert out["norm_precision"] == pytest.approx(2 / 4)  # 0 and 0.1 <= 0.2
    assert precision[2].item() == pytest.approx(2 / 4)  # at 2 px: errors 0 and 1
    assert norm_precision[30].item() == pytest.approx(3 / 4)  # at 0.3


def test_absent_and_boxless_frames():
    visible = torch.tensor([True, True, False, True])
    m = TrackingMetrics()
    m.update(PRED, GT, visible)
    out = m.compute()
    # frame 2 (IoU 100/120) is absent: a failure at every threshold, its box notwithstanding (pytracking, LaSOT)
    assert out["suc"] == pytest.approx((20 + 11) / (4 * 21))
    assert out["precision"] == pytest.approx(2 / 4)
    assert out["norm_precision"] == pytest.approx(1 / 4)
    gt = GT.clone()
    gt[0] = torch.tensor([0, 0, 0, 0])  # no box: a failure even at IoU threshold 0
    success, precision, _ = sequence_curves(PRED, gt)
    assert success[0].item() == pytest.approx(2 / 4)
    assert precision[20].item() == pytest.approx(2 / 4)


def test_absent_frames_fail_everywhere_even_when_tracked_perfectly():
    gt = torch.tensor([[10, 10, 20, 20]] * 5, dtype=torch.float64)
    visible = torch.tensor([True, True, False, True, True])  # 20% absent, the box still annotated
    success, precision, norm_precision = sequence_curves(gt.clone(), gt, visible)
    assert success.tolist() == pytest.approx([4 / 5] * 20 + [0.0])  # IoU 1 > thresholds 0 ... 0.95 on 4 frames
    assert precision.tolist() == pytest.approx([4 / 5] * 51)
    assert norm_precision.tolist() == pytest.approx([4 / 5] * 51)
    m = TrackingMetrics()
    m.update(gt.clone(), gt, visible)
    assert m.compute()["suc"] == pytest.approx(16 / 21)  # the LaSOT toolkit: 4 of 5 frames x 20 of 21
    with pytest.raises(MimlensError, match="visibility flags"):
        sequence_curves(gt, gt, visible[:4])


def test_sequences_are_averaged_not_frames():
    m = TrackingMetrics()
    m.update(PRED, GT)
    perfect = torch.tensor([[5, 5, 4, 8], [6, 5, 4, 8]], dtype=torch.float64)
    m.update(perfect, perfect)  # success 1 below threshold 1: AUC 20/21
    assert m.compute()["suc"] == pytest.approx((12 / 21 + 20 / 21) / 2)
    other = TrackingMetrics()
    other.load_state_dict(m.state_dict())
    assert other.merge(m).compute()["suc"] == pytest.approx(m.compute()["suc"])


def _write_sequence(folder, frames=5, size=48):
    (folder / "img").mkdir(parents=True)
    boxes = []
    for t in range(frames):
        image = np.zeros((size, size, 3), dtype=np.uint8)
        x, y = 8 + 3 * t, 10 + t
        image[y:y + 12, x:x + 10] = 255
        Image.fromarray(image).save(folder / "img" / f"{t + 1:08d}.jpg")
        boxes.append(f"{x},{y},10,12")
    (folder / "groundtruth.txt").write_text("\n".join(boxes) + "\n")
    (folder / "full_occlusion.txt").write_text(",".join("1" if t == 2 else "0" for t in range(frames)))
    (folder / "out_of_view.txt").write_text(",".join("1" if t == 3 else "0" for t in range(frames)))


def test_lasot_reader(tmp_path):
    _write_sequence(tmp_path / "cat" / "cat-1")
    _write_sequence(tmp_path / "cat" / "cat-2", frames=3)
    seqs = find_lasot_sequences(tmp_path)
    assert [s.name for s in seqs] == ["cat-1", "cat-2"]
    assert seqs[0].boxes[1].tolist() == [11, 11, 10, 12]
    assert seqs[0].visible.tolist() == [True, True, False, False, True]
    (tmp_path / "cat" / "cat-2" / "groundtruth.txt").write_text("1,2,3\n1,2,3,4\n1,2,3,4\n")
    with pytest.raises(MimlensError, match="groundtruth.txt:1"):
        find_lasot_sequences(tmp_path)
    with pytest.raises(MimlensError, match="no LaSOT sequence"):
        find_lasot_sequences(tmp_path / "cat" / "cat-1" / "img")


def test_crop_square_copies_pixels_and_pads_with_zero():
    image = torch.arange(3 * 6 * 8, dtype=torch.float32).reshape(3, 6, 8)
    crop = crop_square(image, centre=(4.0, 3.0), side=4, out_size=4)  # rows 1..4, cols 2..5
    assert torch.allclose(crop, image[:, 1:5, 2:6], atol=1e-4)
    corner = crop_square(image, centre=(0.0, 0.0), side=2, out_size=2)
    assert torch.allclose(corner[:, 1, 1], image[:, 0, 0], atol=1e-5) and corner[:, 0].abs().max() < 1e-4


def test_decode_inverts_exact_head_output_and_loss_is_minimal():
    box = torch.tensor([[0.30, 0.40, 0.25, 0.20]])  # centre (0.425, 0.5) → cell (row 4, col 3) of 8x8
    score = torch.full((1, 8, 8), -10.0)
    score[0, 4, 3] = 10.0
    size = torch.zeros(1, 2, 8, 8)
    offset = torch.zeros(1, 2, 8, 8)
    size[0, :, 4, 3] = torch.tensor([0.25, 0.20])
    offset[0, :, 4, 3] = torch.tensor([0.425 * 8 - 3, 0.5 * 8 - 4])
    out = {"score": score, "size": size, "offset": offset}
    assert torch.allclose(decode_boxes(out), box, atol=1e-6)
    _, parts = tracking_loss(out, box)
    assert parts["l1"] == pytest.approx(0, abs=1e-6) and parts["giou"] == pytest.approx(0, abs=1e-5)


def _tiny_vit(**kw):
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                             depth=2, num_heads=2, num_classes=0, **kw)


@pytest.mark.parametrize("kw", [{}, {"class_token": False, "global_pool": "avg"}, {"no_embed_class": True}])
def test_one_stream_tracker_shapes_and_gradients(kw):
    model = OneStreamTracker(_tiny_vit(**kw), template_size=16, search_size=32, head_channels=8)
    out = model(torch.randn(2, 3, 16, 16), torch.randn(2, 3, 32, 32))
    assert out["score"].shape == (2, 4, 4) and out["size"].shape == (2, 2, 4, 4)
    loss, _ = tracking_loss(out, torch.tensor([[0.3, 0.3, 0.2, 0.3], [0.1, 0.5, 0.4, 0.3]]))
    loss.backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_template_tokens_reach_the_search_map():
    model = OneStreamTracker(_tiny_vit(), template_size=16, search_size=32, head_channels=8).eval()
    search = torch.randn(1, 3, 32, 32)
    a = model(torch.randn(1, 3, 16, 16), search)["score"]
    b = model(torch.randn(1, 3, 16, 16), search)["score"]
    assert not torch.allclose(a, b)


def test_swin_is_rejected_with_reason():
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32, embed_dim=16,
                             depths=(1, 1), num_heads=(1, 2), window_size=4, num_classes=0)
    with pytest.raises(MimlensError, match="windows"):
        OneStreamTracker(swin, 16, 32)


def test_pairs_and_sequence_inference(tmp_path):
    _write_sequence(tmp_path / "s")
    seqs = find_lasot_sequences(tmp_path)
    pairs = TrackingPairs(seqs, 16, 32, length=4, centre_jitter=0.0, scale_jitter=0.0)
    item = pairs[0]
    assert item["template"].shape == (3, 16, 16) and item["search"].shape == (3, 32, 32)
    assert item["box"][2:].tolist() == pytest.approx([10 / (4 * 120**0.5), 12 / (4 * 120**0.5)])
    assert item["box"][:2].tolist() == pytest.approx((0.5 - item["box"][2:] / 2).tolist())  # centred without jitter
    model = OneStreamTracker(_tiny_vit(), 16, 32, head_channels=8)
    boxes = track_sequence(model, seqs[0], (0.5,) * 3, (0.5,) * 3)
    assert boxes.shape == (5, 4) and torch.equal(boxes[0], seqs[0].boxes[0])
    assert (boxes[:, 2:] > 0).all() and (boxes[:, :2] >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= 48).all()
