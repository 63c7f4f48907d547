import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mimlens.data import synthetic
from mimlens.data.synthetic import SHAPES, TEXTURES, SceneObject, SyntheticScenes, SyntheticSequences, render
from mimlens.errors import MimlensError


@pytest.fixture(scope="module")
def scenes():
    data = SyntheticScenes(120, 64, seed=3)
    return [data[i] for i in range(len(data))]


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_and_index_give_the_same_scene():
    first, second = SyntheticScenes(10, 64, seed=5), SyntheticScenes(10, 64, seed=5)
    for i in (0, 7):
        assert _equal(first[i], second[i])
    assert not torch.equal(first[0]["image"], first[1]["image"])
    assert not torch.equal(first[0]["image"], SyntheticScenes(10, 64, seed=6)[0]["image"])
    assert not torch.equal(first[0]["image"], SyntheticScenes(10, 64, seed=5, split="val")[0]["image"])


def test_fields_shapes_and_ranges(scenes):
    item = scenes[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["depth"].shape == (1, 64, 64) and item["segmentation"].shape == (64, 64)
    assert item["keypoints"].shape == (5, 3) and item["box"].shape == (4,)
    assert item["boxes"].shape == (3, 4) and item["classes"].shape == (3,)
    for item in scenes:
        assert 0 <= item["image"].min() and item["image"].max() <= 1
        assert 0 <= item["label"] < len(SHAPES)
        assert item["fine_label"] // len(TEXTURES) == item["label"]
        assert item["classes"][0] == item["label"]
    assert len({int(s["label"]) for s in scenes}) == len(SHAPES)
    assert len({int(s["fine_label"]) for s in scenes}) > 20


def test_depth_is_positive_and_flat_on_each_object(scenes):
    for item in scenes:
        depth, segmentation = item["depth"][0].numpy(), item["segmentation"].numpy()
        assert (depth > 0).all()
        for slot in np.unique(segmentation)[1:]:
            values = depth[segmentation == slot]
            assert (values == values[0]).all(), "an object sits at one depth"
            assert (values[0] < depth[segmentation == 0]).any(), "objects stand in front of the plane"


def test_ground_plane_gets_farther_towards_the_top(scenes):
    for item in scenes[:20]:
        depth, background = item["depth"][0], item["segmentation"] == 0
        column = int(background.all(0).float().argmax())  # a column with no object, if any
        if background[:, column].all():
            assert (depth[:-1, column] > depth[1:, column]).all()


def test_painters_order_nearest_object_wins():
    background, ground = np.zeros((32, 32, 3), np.float32), np.full((32, 32), 10.0, np.float32)
    palette = np.array([[0, 0, 0], [1, 0, 0], [1, 0, 0]], np.float32)
    near = SceneObject(0, 0, palette, cx=14.0, cy=16.0, radius=8.0, angle=0.0, depth=2.0)
    far = SceneObject(0, 0, palette[:, ::-1].copy(), cx=20.0, cy=16.0, radius=8.0, angle=0.0, depth=5.0)
    for objects, near_slot in (([near, far], 1), ([far, near], 2)):
        image, depth, segmentation, amodal = render(background, ground, objects)
        assert segmentation[16, 17] == near_slot and depth[16, 17] == 2.0 and image[16, 17, 0] == 1.0
        assert segmentation[16, 27] == 3 - near_slot and depth[16, 27] == 5.0 and image[16, 27, 2] == 1.0
        assert depth[0, 0] == 10.0 and segmentation[0, 0] == 0
        # circle of radius 8 centred on pixel-centre coordinate 14 covers pixels 6..21 (centres 6.5..21.5)
        assert amodal[objects.index(near)].tolist() == [6, 8, 16, 16]


@pytest.mark.parametrize(
    ("shape", "area"),
    [
        ("circle", math.pi),
        ("ring", math.pi * (1 - 0.35**2)),
        ("triangle", 1.5 * math.sin(2 * math.pi / 3)),
        ("square", 2.0),
        ("pentagon", 2.5 * math.sin(2 * math.pi / 5)),
        ("star", 5 * math.sin(math.pi / 5) * math.cos(2 * math.pi / 5) / math.cos(math.pi / 5)),  # n R r sin(pi/n)
        ("cross", 2 * (2 * 0.6) - 0.6**2),
    ],
)
def test_shape_areas_match_geometry(shape, area):
    # Regular polygons and the pentagram have circumradius 1; sample the unit frame at 400 px per radius.
    centres = (np.arange(-440, 440, dtype=np.float32) + 0.5) / 400
    mask = synthetic._shape_mask(SHAPES.index(shape), centres[None, :], centres[:, None])
    assert mask.sum() / 400**2 == pytest.approx(area, rel=5e-3)


def test_boxes_are_the_visible_pixels_of_each_object_and_lie_in_the_image(scenes):
    for item in scenes:
        segmentation = item["segmentation"].numpy()
        for slot, (box, cls) in enumerate(zip(item["boxes"].tolist(), item["classes"].tolist(), strict=True)):
            rows, cols = np.nonzero(segmentation == slot + 1)
            if cls < 0:
                assert rows.size == 0 and box == [0, 0, 0, 0]
                continue
            assert box == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
            x, y, w, h = box
            assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 64 and y + h <= 64


def test_main_box_is_amodal_and_holds_the_visible_main_object(scenes):
    for item in scenes:
        x, y, w, h = item["box"].tolist()
        vx, vy, vw, vh = item["boxes"][0].tolist()
        assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
        assert x <= vx and y <= vy and vx + vw <= x + w and vy + vh <= y + h


def test_keypoints_are_inside_the_main_box_and_visibility_follows_occlusion(scenes):
    occluded = 0
    for item in scenes:
        x, y, w, h = item["box"].tolist()
        segmentation = item["segmentation"]
        for kx, ky, v in item["keypoints"].tolist():
            assert v in (1, 2), "the main object lies inside the image"
            assert x <= kx <= x + w and y <= ky <= y + h
            owner = int(segmentation[int(ky), int(kx)])
            if owner == 1:
                assert v == 2
            if v == 1:
                assert owner >= 2, "an occluded keypoint is covered by another object"
                occluded += 1
    assert occluded > 0


def test_keypoints_turn_with_the_object(scenes):
    for item in scenes:
        k = item["keypoints"][:, :2].double()
        arms = k[1:] - k[0]  # top, right, bottom, left from the centre
        lengths = arms.norm(dim=1)
        assert torch.allclose(lengths, lengths[0].expand(4), rtol=1e-4)
        # in image coordinates (y down), turning "top" by +90° (clockwise on screen) gives "right"
        top, right = arms[0], arms[1]
        assert torch.allclose(torch.stack([-top[1], top[0]]), right, atol=1e-3)
        assert torch.allclose(arms[2], -arms[0], atol=1e-3) and torch.allclose(arms[3], -arms[1], atol=1e-3)
    angles = [math.degrees(math.atan2(float(s["keypoints"][1, 0] - s["keypoints"][0, 0]),
                                      float(s["keypoints"][0, 1] - s["keypoints"][1, 1]))) for s in scenes]
    assert max(angles) > 20 and min(angles) < -20 and max(abs(a) for a in angles) <= 45 + 1e-3


def test_difficulty_settings():
    one = SyntheticScenes(30, 64, seed=1, num_objects=(1, 1))
    assert all((one[i]["classes"] >= 0).sum() == 1 and one[i]["classes"].shape == (1,) for i in range(30))
    bright = SyntheticScenes(4, 64, seed=1, background_strength=1.0)
    dim = SyntheticScenes(4, 64, seed=1, background_strength=0.5)
    black = SyntheticScenes(4, 64, seed=1, background_strength=0.0, background="texture")
    for i in range(4):
        background = (bright[i]["segmentation"] == 0).expand(3, -1, -1)
        assert torch.allclose(dim[i]["image"][background], 0.5 * bright[i]["image"][background], atol=1e-6)
        assert (black[i]["image"][(black[i]["segmentation"] == 0).expand(3, -1, -1)] == 0).all()


def test_bad_difficulty_and_split_raise():
    with pytest.raises(MimlensError, match="unknown difficulty setting"):
        SyntheticScenes(4, num_objecs=(1, 2))
    with pytest.raises(MimlensError, match="num_objects"):
        SyntheticScenes(4, num_objects=(2, 1))
    with pytest.raises(MimlensError, match="background_strength"):
        SyntheticScenes(4, background_strength=2.0)
    with pytest.raises(MimlensError, match="split"):
        SyntheticScenes(4, split="training")


def test_any_size_and_default_collate():
    data = SyntheticScenes(6, (40, 72), seed=0, num_objects=(1, 2))
    batch = next(iter(DataLoader(data, batch_size=3)))
    assert batch["image"].shape == (3, 3, 40, 72) and batch["depth"].shape == (3, 1, 40, 72)
    assert batch["boxes"].shape == (3, 2, 4) and batch["keypoints"].shape == (3, 5, 3)


def test_transform_applies_to_the_image_only():
    data = SyntheticScenes(2, 32, transform=lambda image: image * 0 - 1)
    item = data[0]
    assert (item["image"] == -1).all() and (item["depth"] > 0).all()


@pytest.fixture(scope="module")
def sequences():
    data = SyntheticSequences(12, length=24, img_size=64, seed=2)
    return [data[i] for i in range(len(data))]


def test_sequences_are_deterministic_and_shaped(sequences):
    again = SyntheticSequences(12, length=24, img_size=64, seed=2)[3]
    assert _equal(sequences[3], again)
    item = sequences[0]
    assert item["frames"].shape == (24, 3, 64, 64) and item["boxes"].shape == (24, 4)
    assert item["full_occlusion"].dtype == torch.bool and item["out_of_view"].shape == (24,)


def test_sequence_boxes_follow_the_object(sequences):
    moved = 0
    for item in sequences:
        boxes, out, occluded = item["boxes"], item["out_of_view"], item["full_occlusion"]
        assert not out[0]
        assert (boxes[out] == 0).all() and not (occluded & out).any()
        inside = ~out & (boxes[:, 0] > 0) & (boxes[:, 1] > 0) & (boxes[:, :2] + boxes[:, 2:] < 64).all(1)
        centres = boxes[:, :2] + boxes[:, 2:] / 2
        for t in range(1, len(boxes)):
            if inside[t] and inside[t - 1]:
                # at most 2 px/frame of motion plus the growth of a radius of at most 0.3 * 64 px
                assert (centres[t] - centres[t - 1]).norm() < 4.0
        moved += (centres[inside][-1] - centres[inside][0]).norm() > 5
        assert (item["frames"][1:] != item["frames"][:-1]).any()
    assert moved >= len(sequences) // 2


def test_sequences_report_occlusion_and_leaving_the_view():
    data = SyntheticSequences(40, length=48, img_size=32, seed=0, num_objects=(3, 3), distractor_size=(0.3, 0.4))
    flags = [data[i] for i in range(len(data))]
    assert any(s["out_of_view"].any() for s in flags)
    assert any(s["full_occlusion"].any() for s in flags)
