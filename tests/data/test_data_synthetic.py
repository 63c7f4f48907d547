import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mimlens.data import synthetic
from mimlens.data.synthetic import (
    KEYPOINT_NAMES,
    SHAPES,
    TEXTURES,
    TWIN_FRACTION,
    SceneObject,
    SyntheticScenes,
    SyntheticSequences,
    render,
)
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


def _plane(depth: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Least-squares (a, b, c) of depth = a + b x + c y over pixel centres where ``where``."""
    rows, cols = np.nonzero(where)
    design = np.stack([np.ones(rows.size), cols + 0.5, rows + 0.5], axis=1)
    return np.linalg.lstsq(design, depth[rows, cols].astype(np.float64), rcond=None)[0]


def test_main_object_stands_on_the_ground_at_its_contact_point(scenes):
    checked = 0
    for item in scenes:
        depth, segmentation = item["depth"][0].numpy(), item["segmentation"].numpy()
        a, b, c = _plane(depth, segmentation == 0)  # the ground is a plane: recover it from the background
        assert np.abs(a + b * (np.arange(64) + 0.5)[None] + c * (np.arange(64) + 0.5)[:, None]
                      - depth)[segmentation == 0].max() < 1e-4
        x, y, w, h = item["box"].tolist()
        if (segmentation == 1).any():
            expected = a + b * (x + w / 2) + c * (y + h - 0.5)  # bottom row's centre, halfway across
            assert depth[segmentation == 1][0] == pytest.approx(expected, rel=1e-5)
            checked += 1
    assert checked > 100


def _random_objects(rng: np.random.Generator, count: int) -> list[SceneObject]:
    palette = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    return [SceneObject(int(rng.integers(len(SHAPES))), int(rng.integers(len(TEXTURES))), palette,
                        cx=float(rng.uniform(0, 48)), cy=float(rng.uniform(0, 48)), radius=float(rng.uniform(4, 14)),
                        angle=float(rng.uniform(-0.8, 0.8)), depth=0.0) for _ in range(count)]


def test_every_object_stands_on_the_ground_and_the_lower_one_covers_the_higher():
    # ground without sideways tilt: depth falls with the row alone, so the lower contact is the nearer object
    def ground_at(x, y):
        return 2.0 + 3.0 * (1 - y / 48)

    rows = np.arange(48, dtype=np.float32)[:, None] + 0.5
    ground = np.broadcast_to(ground_at(0.0, rows), (48, 48)).astype(np.float32)
    rng, overlaps = np.random.default_rng(0), 0
    for _ in range(60):
        objects = _random_objects(rng, 3)
        _, depth, segmentation, _ = render(np.zeros((48, 48, 3), np.float32), ground, objects, ground_at)
        alone = [render(np.zeros((48, 48, 3), np.float32), ground, [obj])[2] == 1 for obj in objects]
        bottoms = [np.nonzero(mask.any(1))[0].max() if mask.any() else None for mask in alone]
        for k, bottom in enumerate(bottoms):
            if bottom is not None:
                assert objects[k].depth == pytest.approx(ground_at(0.0, bottom + 0.5))
        for i in range(3):
            for j in range(3):
                both = alone[i] & alone[j]
                if i != j and both.any() and bottoms[i] > bottoms[j]:
                    assert (segmentation[both] == i + 1).all() and (depth[both] == np.float32(objects[i].depth)).all()
                    overlaps += 1
    assert overlaps > 10


_LANDMARK_COUNT = {"triangle": 3, "square": 4, "crescent": 4}
#: Sharpest interior angle (degrees) of a shape's outline at a landmark; 180 where the outline is smooth there.
_SHARPEST = {"triangle": 60, "square": 90, "pentagon": 108, "star": 36, "crescent": 29}


def _reach(shape: str) -> float:
    """How far from a landmark the nearest pixel centre of the shape may lie: a corner of interior angle a holds a
    disc of radius r = √2/2 whose centre is r / sin(a/2) from the corner, and such a disc holds a pixel centre."""
    radius = math.sqrt(0.5)
    return radius * (1 + 1 / math.sin(math.radians(_SHARPEST.get(shape, 180)) / 2)) + 0.05


def _distance_to_pixels(x: float, y: float, mask: np.ndarray) -> float:
    """Distance from (x, y) to the nearest pixel centre of ``mask``."""
    rows, cols = np.nonzero(mask)
    return float(np.hypot(cols + 0.5 - x, rows + 0.5 - y).min())


def test_keypoints_are_landmarks_of_the_outline_and_visibility_follows_occlusion(scenes):
    occluded = 0
    for item in scenes:
        shape, segmentation = SHAPES[int(item["label"])], item["segmentation"].numpy()
        keypoints = item["keypoints"].numpy()
        assert (keypoints[:, 2] > 0).sum() == _LANDMARK_COUNT.get(shape, 5), "the main object lies inside"
        assert (keypoints[keypoints[:, 2] == 0] == 0).all()
        for x, y, v in keypoints[keypoints[:, 2] > 0].tolist():
            if v == 2:  # 1.41 px on a smooth outline, 1.6-3.6 px at the shapes' corners
                assert _distance_to_pixels(x, y, segmentation == 1) <= _reach(shape)
            else:  # covered by a nearer object
                assert _distance_to_pixels(x, y, segmentation >= 2) <= _reach(shape)
                occluded += 1
    assert occluded > 0


def _object_keypoints(shape: str, angle: float, cx: float = 64.0) -> np.ndarray:
    obj = SceneObject(SHAPES.index(shape), 0, np.eye(3, dtype=np.float32), cx=cx, cy=64.0, radius=40.0, angle=angle,
                      depth=1.0)
    _, _, segmentation, footprints = synthetic._render(np.zeros((128, 128, 3), np.float32),
                                                       np.full((128, 128), 5.0, np.float32), [obj])
    return synthetic._keypoints(obj, footprints[0], segmentation, 0)


@pytest.mark.parametrize("shape", SHAPES)
def test_keypoints_lie_on_the_outline_and_turn_with_the_object(shape):
    symmetry = {"triangle": 120, "square": 90, "pentagon": 72, "star": 72, "cross": 90, "crescent": 360}.get(shape)
    # on the outline: within 0.01 radii of a point inside and of a point outside (exact shape, fine samples)
    turn = math.radians(20)
    ring = 0.01 * np.exp(1j * np.linspace(0, 2 * np.pi, 64, endpoint=False))
    for x, y, v in _object_keypoints(shape, turn).tolist():
        if v > 0:
            du, dv = (x - 64) / 40 + ring.real, (y - 64) / 40 + ring.imag  # object frame (angle undone below)
            u, w = du * math.cos(turn) + dv * math.sin(turn), dv * math.cos(turn) - du * math.sin(turn)
            inside = synthetic._shape_mask(SHAPES.index(shape), u, w)
            assert inside.any() and not inside.all()
    small, large = _object_keypoints(shape, math.radians(-10)), _object_keypoints(shape, math.radians(15))
    assert (small[:, 2] == large[:, 2]).all()
    offsets = (small[:, 0] - 64) + 1j * (small[:, 1] - 64), (large[:, 0] - 64) + 1j * (large[:, 1] - 64)
    labelled = small[:, 2] > 0
    if symmetry is None:  # circle and ring: no landmark turns, so they stay in the image frame
        assert np.allclose(offsets[0][labelled], offsets[1][labelled], atol=1e-3)
    else:  # y down: turning by +25° is clockwise on the screen, multiplying x + iy by e^{i 25°}
        assert np.allclose(offsets[0][labelled] * np.exp(1j * math.radians(25)), offsets[1][labelled], atol=1e-3)
    if symmetry is not None and symmetry < 360:  # the same outline gives the same keypoints
        past = _object_keypoints(shape, math.radians(symmetry / 2 + 5))
        assert np.allclose(past, _object_keypoints(shape, math.radians(5 - symmetry / 2)), atol=1e-3)


@pytest.mark.parametrize("shape", [s for s in SHAPES if s != "crescent"])
def test_a_mirror_swaps_the_left_and_right_keypoints(shape):
    keypoints, mirrored = _object_keypoints(shape, 0.3, cx=60.0), _object_keypoints(shape, -0.3, cx=68.0)
    swap = [KEYPOINT_NAMES.index(n.replace("left", "@").replace("right", "left").replace("@", "right"))
            for n in KEYPOINT_NAMES]
    expected = keypoints[swap].copy()
    expected[:, 0] = np.where(expected[:, 2] > 0, 128 - expected[:, 0], 0)
    assert np.allclose(mirrored, expected, atol=1e-3)


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
                # at most 3 px/frame of motion plus the growth of a radius of at most 0.3 * 64 px
                assert (centres[t] - centres[t - 1]).norm() < 5.0
        moved += (centres[inside][-1] - centres[inside][0]).norm() > 5
        assert (item["frames"][1:] != item["frames"][:-1]).any()
    assert moved >= len(sequences) // 2


def test_sequences_report_occlusion_and_leaving_the_view():
    data = SyntheticSequences(40, length=48, img_size=32, seed=0, num_objects=(3, 3), distractor_size=(0.3, 0.4))
    flags = [data[i] for i in range(len(data))]
    assert any(s["out_of_view"].any() for s in flags)
    assert any(s["full_occlusion"].any() for s in flags)


def test_twins_look_like_the_target_in_a_known_fraction_of_sequences():
    data = SyntheticSequences(80, length=2, img_size=64, seed=1, num_objects=(2, 2), background_strength=0.0,
                              background="texture")
    twins, compared = 0, 0
    for i in range(len(data)):
        item = data[i]
        frame, segmentation = item["frames"][0].permute(1, 2, 0).numpy(), item["segmentation"][0].numpy()
        colours = [{tuple(c) for c in frame[segmentation == k].round(5).tolist()} for k in (1, 2)]
        twins += bool(item["twin"])
        if min((segmentation == 1).sum(), (segmentation == 2).sum()) < 40:
            continue
        compared += 1
        if item["twin"]:  # same palette and texture: the same colours show on both
            assert colours[0] == colours[1]
        else:
            assert not colours[0] & colours[1]
    assert compared > 40
    assert abs(twins / len(data) - TWIN_FRACTION) < 0.2  # 80 draws: 3.6 standard deviations
    single = SyntheticSequences(10, length=2, img_size=64, seed=1, num_objects=(1, 1))
    assert not any(single[i]["twin"] for i in range(10))


def test_twins_have_the_target_shape_and_size():
    data = SyntheticSequences(100, length=1, img_size=64, seed=2, num_objects=(2, 2), object_size=(0.12, 0.15))
    checked = 0
    for i in range(len(data)):
        item = data[i]
        segmentation = item["segmentation"][0].numpy()
        areas = [(segmentation == k).sum() for k in (1, 2)]
        boxes = [_box_of(segmentation == k) for k in (1, 2)]
        apart = all(b is not None and b[0] > 0 and b[1] > 0 and b[2] < 63 and b[3] < 63 for b in boxes)
        if item["twin"] and apart and not _touching(segmentation == 1, segmentation == 2):
            assert areas[1] == pytest.approx(areas[0], rel=0.1)  # whole, unoccluded: same shape and radius
            checked += 1
    assert checked >= 10


def _box_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.nonzero(mask)
    return None if rows.size == 0 else (cols.min(), rows.min(), cols.max(), rows.max())


def _touching(a: np.ndarray, b: np.ndarray) -> bool:
    grown = a.copy()
    grown[1:] |= a[:-1]
    grown[:-1] |= a[1:]
    grown[:, 1:] |= a[:, :-1]
    grown[:, :-1] |= a[:, 1:]
    return bool((grown & b).any())
