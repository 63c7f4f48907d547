"""Deterministic synthetic scenes and sequences that carry a label for every task family of the paper.

A scene is 1–3 textured shapes over a background cropped from a bundled photo (or a procedural
texture), standing on a ground plane. Everything is drawn from ``(seed, split, index)``
alone, so item ``i`` is the same image with the same labels on every machine, in every worker and in
every epoch, and any size can be generated on the fly (default 64 px).

Conventions:
- image: float32 ``(3, H, W)`` in [0, 1], not normalised (normalisation belongs to the transforms);
- pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``, so its centre is ``(col + ½, row + ½)``;
  keypoint coordinates are continuous in that frame, boxes are ``(x, y, w, h)`` in pixels (COCO/LaSOT);
- ``label``: the main object's shape (8 classes, :data:`SHAPES`); ``fine_label``: shape × texture
  (``label * 4 + texture``, 32 classes);
- ``depth``: float32 ``(1, H, W)``, positive, in metres: a ground plane (the same in every scene,
  :data:`GROUND`) whose depth grows towards the top of the image, and each object flat at the ground's depth
  at its contact point, the bottom centre of its amodal box (clipped to the image): the centre of its lowest
  pixel row, halfway across its columns. An
  object's depth therefore follows from where its footprint ends in the frame, and objects are painted far
  to near, so the one lower in the frame covers the other where they overlap;
- ``segmentation``: int64 ``(H, W)``, 0 = background, ``k + 1`` = object slot ``k`` (slot 0 is the main object);
- ``keypoints``: float32 ``(5, 3)`` rows ``(x, y, v)``: landmarks of the main object's outline in the slots
  of :data:`KEYPOINT_NAMES`, nominally 0°, 72°, 144°, 216° and 288° clockwise from up (see
  :data:`_LANDMARKS`); a slot the shape has no landmark for is ``(0, 0, 0)``. COCO visibility, read at the
  object's own pixel nearest to the landmark: 2 painted with the object, 1 covered by a nearer object,
  0 outside the image or no landmark;
- ``box``: the main object's full (amodal) box, clipped to the image; ``boxes``/``classes``: the box of the
  *visible* pixels of every object and its shape, padded to ``max(num_objects)`` slots with class -1.

Landmarks are labelled from the silhouette alone: a shape with n-fold symmetry is labelled as if turned by
its angle reduced to ``[-180°/n, 180°/n)``, so two rotations that draw the same outline give the same
keypoints; the circle and the ring, with no landmark that turns, have theirs fixed in the image frame. A
horizontal mirror swaps ``upper_right``/``upper_left`` and ``lower_right``/``lower_left`` for every shape
but the crescent, whose mirror image opens the other way and is never drawn (rotations stay within
±``max_rotation``, 45° by default).

The labels of a scene were once drawn differently: each object sat at the ground's depth below its centre
times a random factor in [0.5, 0.9] that nothing in the image revealed, and the keypoints were the centre
and four points at 0.4 radii, marked by no feature of the shape. The random draws are unchanged (the factor
is still drawn and only orders sequence objects), so scene ``i`` keeps its background, shapes, colours and
layout; only the painting order where objects overlap changed with the depths.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from mimlens.data.photos import procedural_texture, resized_photos
from mimlens.errors import MimlensError

__all__ = [
    "KEYPOINT_NAMES",
    "SHAPES",
    "TEXTURES",
    "Difficulty",
    "SyntheticScenes",
    "SyntheticSequences",
    "generate_scene",
    "generate_sequence",
]

SHAPES = ("circle", "ring", "crescent", "triangle", "square", "pentagon", "star", "cross")
TEXTURES = ("solid", "stripes", "checker", "dots")
KEYPOINT_NAMES = ("top", "upper_right", "lower_right", "lower_left", "upper_left")
TWIN_FRACTION = 0.5  # of sequences with a distractor: the first distractor looks like the main object
_SPLITS = {"train": 0, "val": 1, "test": 2}
_SCENE_STREAM, _SEQUENCE_STREAM = 0, 1
_EXTENT = 1.05  # every shape lies within this many radii of its centre (the cross's corners reach 1.044)
_SPRITE_REACH, _SPRITE_RESOLUTION = 1.1, 128  # sprites cover [-1.1, 1.1] radii with 128 cells per radius
_SPRITE_CELLS = round(2 * _SPRITE_REACH * _SPRITE_RESOLUTION)


@dataclasses.dataclass(frozen=True)
class Difficulty:
    """How hard the scenes are. 1–2 objects and dimmer backgrounds (~0.5) train faster on CPU.

    Attributes:
        num_objects: inclusive range of objects per scene, the main object included.
        background: ``"photo"`` (crop of a bundled photo), ``"texture"`` (procedural) or ``"mixed"`` (either, 50/50).
        background_strength: the background is multiplied by this factor (1 = as is, 0.5 = half the brightness
            and half the contrast, 0 = black).
        object_size: range of the main object's radius as a fraction of the image side.
        distractor_size: the same for the other objects.
        max_rotation: objects are turned by a uniform angle in ``[-max_rotation, max_rotation]`` degrees.
    """

    num_objects: tuple[int, int] = (1, 3)
    background: str = "photo"
    background_strength: float = 1.0
    object_size: tuple[float, float] = (0.15, 0.3)
    distractor_size: tuple[float, float] = (0.08, 0.18)
    max_rotation: float = 45.0

    def __post_init__(self):
        low, high = self.num_objects
        if not 1 <= low <= high:
            raise MimlensError(f"num_objects must be a range (low, high) with 1 <= low <= high, got {self.num_objects}")
        if self.background not in ("photo", "texture", "mixed"):
            raise MimlensError(f"background must be 'photo', 'texture' or 'mixed', got {self.background!r}")
        if not 0.0 <= self.background_strength <= 1.0:
            raise MimlensError(f"background_strength must lie in [0, 1], got {self.background_strength}")
        for name in ("object_size", "distractor_size"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 0.5:
                raise MimlensError(
                    f"{name} must be a range (low, high) with 0 < low <= high <= 0.5, got ({low}, {high})"
                )

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> Difficulty:
        """Settings by name, lists as tuples; a None value means the field's default (as config files say)."""
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise MimlensError(f"unknown difficulty setting(s) {unknown}; expected some of {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})


@dataclasses.dataclass(eq=False)
class SceneObject:
    """One textured shape: centre and radius in pixels, angle in radians, depth in metres."""

    shape: int
    texture: int
    palette: np.ndarray  # (3, 3): row 1 the first colour of the texture, row 2 the second (row 0 unused)
    cx: float
    cy: float
    radius: float
    angle: float
    depth: float


# ---------------------------------------------------------------------------------------------- drawing


def _half_planes(angles_from_up: tuple[float, ...]) -> np.ndarray:
    """Unit normals (n, 2) at the given angles from "up" (clockwise, y down), for ``u * nx + v * ny > offset`` tests."""
    angles = np.asarray(angles_from_up) - np.pi / 2
    return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


def _regular(points: int, phase: float = 0.0) -> tuple[np.ndarray, float]:
    """Edge normals and apothem of the regular polygon of circumradius 1 with a vertex pointing up (turned by phase)."""
    sector = 2 * math.pi / points
    return _half_planes(tuple(phase + sector / 2 + sector * k for k in range(points))), math.cos(sector / 2)


#: Polygons as (edge normals, offset, how many half-planes a point may lie outside of and still be inside).
#: A convex polygon allows none; the pentagram (edges on the 5 lines through every second tip, offset
#: cos 72°) allows one: its inner pentagon is inside all 5 lines and each tip outside exactly one.
_POLYGONS = {
    "triangle": (*_regular(3), 0),
    "square": (*_regular(4, math.pi / 4), 0),
    "pentagon": (*_regular(5), 0),
    "star": (_half_planes(tuple(2 * math.pi / 5 * (k + 1) for k in range(5))), math.cos(2 * math.pi / 5), 1),
}


def _shape_mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pixels inside shape ``SHAPES[shape]`` of circumradius 1, given coordinates in the object's frame (y down)."""
    name = SHAPES[shape]
    if name == "circle":
        return u * u + v * v <= 1
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1) & (r2 >= 0.35**2)
    if name == "crescent":
        return (u * u + v * v <= 1) & ((u - 0.5) ** 2 + v * v > 0.75**2)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 1) & (av <= 0.3)) | ((av <= 1) & (au <= 0.3))
    normals, offset, allowed = _POLYGONS[name]
    outside = np.zeros(np.broadcast_shapes(u.shape, v.shape), np.int8)
    for nx, ny in normals.tolist():
        outside += (u * nx + v * ny) > offset
    return outside <= allowed


def _polar(*degrees_from_up: float) -> list[tuple[float, float]]:
    """Points of the unit circle at the given angles clockwise from up, as (u, v) with v down."""
    return [(math.sin(math.radians(a)), -math.cos(math.radians(a))) for a in degrees_from_up]


_NONE = (math.nan, math.nan)
_HORN = (0.6875, math.sqrt(1 - 0.6875**2))  # where the crescent's outer and inner circles meet
#: Per shape: the landmark of each keypoint slot in the object's frame at angle 0 (radius units, v down; NaN
#: where the shape has none) and the angle of its rotational symmetry in radians (0: the landmarks stay in
#: the image frame). Polygons and the star: their vertices; cross: the tip of the upward arm and the four
#: corners where the arms meet; crescent: its two horns, the deepest point of its inner arc and the middle of
#: its outer arc; circle and ring: the outline's points in the five slot directions.
_LANDMARKS = {name: (np.array(points, np.float64), symmetry) for name, (points, symmetry) in (
    ("circle", (_polar(0, 72, 144, 216, 288), 0.0)),
    ("ring", (_polar(0, 72, 144, 216, 288), 0.0)),
    ("crescent", ([_NONE, (_HORN[0], -_HORN[1]), _HORN, (-0.25, 0.0), (-1.0, 0.0)], 2 * math.pi)),
    ("triangle", ([*_polar(0), _NONE, *_polar(120, 240), _NONE], 2 * math.pi / 3)),
    ("square", ([_NONE, *_polar(45, 135, 225, 315)], math.pi / 2)),
    ("pentagon", (_polar(0, 72, 144, 216, 288), 2 * math.pi / 5)),
    ("star", (_polar(0, 72, 144, 216, 288), 2 * math.pi / 5)),
    ("cross", ([(0.0, -1.0), (0.3, -0.3), (0.3, 0.3), (-0.3, 0.3), (-0.3, -0.3)], math.pi / 2)),
)}


def _texture_mask(texture: int, u: np.ndarray, v: np.ndarray, frequency: float = 2.0) -> np.ndarray:
    """Where the texture shows its second colour (never for a solid object); ``frequency`` in cycles per radius."""
    name = TEXTURES[texture]
    if name == "solid":
        return np.zeros(np.broadcast_shapes(u.shape, v.shape), bool)
    if name == "stripes":
        return np.sin(np.pi * frequency * u) >= 0
    if name == "checker":
        return np.sin(np.pi * frequency * u) * np.sin(np.pi * frequency * v) >= 0
    fu, fv = u * frequency, v * frequency  # dots on the integer lattice
    fu -= np.rint(fu)
    fv -= np.rint(fv)
    return fu * fu + fv * fv <= 0.35**2


@functools.cache
def _sprites() -> np.ndarray:
    """Every shape × texture rasterised once in the object's frame: uint8 ``(shapes, textures, N, N)`` with
    0 outside, 1 the first colour, 2 the second. Rendering then samples it (nearest cell), which costs a
    handful of array operations per object instead of one per polygon edge."""
    centres = (np.arange(_SPRITE_CELLS, dtype=np.float32) + 0.5) / _SPRITE_RESOLUTION - _SPRITE_REACH
    u, v = centres[None, :], centres[:, None]
    out = np.zeros((len(SHAPES), len(TEXTURES), _SPRITE_CELLS, _SPRITE_CELLS), np.uint8)
    for shape in range(len(SHAPES)):
        inside = _shape_mask(shape, u, v)
        for texture in range(len(TEXTURES)):
            out[shape, texture] = inside * (1 + _texture_mask(texture, u, v))
    return out


def _window(obj: SceneObject, height: int, width: int) -> tuple[int, int, int, int]:
    reach = _EXTENT * obj.radius
    y0, y1 = max(0, math.floor(obj.cy - reach)), min(height, math.ceil(obj.cy + reach))
    x0, x1 = max(0, math.floor(obj.cx - reach)), min(width, math.ceil(obj.cx + reach))
    return y0, y1, x0, x1


def _box(mask: np.ndarray, y0: int = 0, x0: int = 0) -> np.ndarray | None:
    """Tight ``(x, y, w, h)`` box of a boolean mask whose top-left pixel is at ``(x0, y0)``; None if empty."""
    rows, cols = mask.any(1), mask.any(0)
    top = int(rows.argmax())
    if not rows[top]:
        return None
    bottom, left, right = len(rows) - int(rows[::-1].argmax()), int(cols.argmax()), len(cols) - int(cols[::-1].argmax())
    return np.array([x0 + left, y0 + top, right - left, bottom - top], np.float32)


@dataclasses.dataclass
class _Footprint:
    """An object's pixels before occlusion: ``cells`` (sprite value per pixel of its window, 0 outside the
    shape) with top-left pixel ``(x0, y0)``, and its amodal box clipped to the image."""

    y0: int
    x0: int
    cells: np.ndarray
    box: np.ndarray


def _footprint(obj: SceneObject, height: int, width: int) -> _Footprint | None:
    """Each pixel takes the object's sprite cell under its centre; None when no pixel of the shape is inside."""
    y0, y1, x0, x1 = _window(obj, height, width)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - obj.cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - obj.cx)[None, :]
    scale, last = _SPRITE_RESOLUTION / obj.radius, _SPRITE_CELLS - 1
    cos, sin, shift = math.cos(obj.angle) * scale, math.sin(obj.angle) * scale, _SPRITE_REACH * _SPRITE_RESOLUTION
    column = np.clip(dx * cos + dy * sin + shift, 0, last).astype(np.intp)  # u = (x cos + y sin) / radius
    row = np.clip(dy * cos - dx * sin + shift, 0, last).astype(np.intp)  # v = (y cos - x sin) / radius
    cells = _sprites()[obj.shape, obj.texture][row, column]
    box = _box(cells.astype(bool), y0, x0)
    return None if box is None else _Footprint(y0, x0, cells, box)


def contact_depth(box: np.ndarray, ground_at: Callable[[float, float], float]) -> float:
    """Depth of the ground where an object with amodal box ``(x, y, w, h)`` stands: at the centre of its
    lowest pixel row, halfway across its columns."""
    x, y, w, h = (float(v) for v in box)
    return float(ground_at(x + w / 2, y + h - 0.5))


def _render(
    background: np.ndarray, ground: np.ndarray, objects: list[SceneObject], ground_at=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[_Footprint | None]]:
    """:func:`render` with each object's footprint in place of its box."""
    height, width = ground.shape
    footprints = [_footprint(obj, height, width) for obj in objects]
    if ground_at is not None:
        for obj, foot in zip(objects, footprints, strict=True):
            if foot is not None:
                obj.depth = contact_depth(foot.box, ground_at)
    image, depth = background.copy(), ground.copy()
    segmentation = np.zeros((height, width), np.int64)
    for slot in sorted(range(len(objects)), key=lambda k: -objects[k].depth):
        obj, foot = objects[slot], footprints[slot]
        if foot is None:
            continue
        inside = foot.cells.astype(bool)
        where = (slice(foot.y0, foot.y0 + inside.shape[0]), slice(foot.x0, foot.x0 + inside.shape[1]))
        np.copyto(image[where], obj.palette[foot.cells], where=inside[..., None])
        np.copyto(depth[where], np.float32(obj.depth), where=inside)
        np.copyto(segmentation[where], slot + 1, where=inside)
    return image, depth, segmentation, footprints


def render(
    background: np.ndarray, ground: np.ndarray, objects: list[SceneObject], ground_at=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """Paint ``objects`` far to near over ``background`` (H, W, 3) and ``ground`` depth (H, W).

    Each pixel takes the colour of the object's sprite cell under its centre. With ``ground_at(x, y)`` (the
    ground's depth at a point, in pixels), each object's depth is first set to :func:`contact_depth`.
    Returns the image (H, W, 3), the depth (H, W), the segmentation (H, W; slot + 1 per object) and each
    object's amodal box clipped to the image (None when it lies outside).
    """
    image, depth, segmentation, footprints = _render(background, ground, objects, ground_at)
    return image, depth, segmentation, [None if foot is None else foot.box for foot in footprints]


# --------------------------------------------------------------------------------------------- sampling


class _Draws:
    """Uniform numbers of one item's random stream, drawn in blocks: scalar draws from a numpy Generator
    cost microseconds each, which would dominate the time to make a 64 px scene."""

    def __init__(self, seed: int, stream: int, split: str, index: int):
        if split not in _SPLITS:
            raise MimlensError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        self.rng = np.random.default_rng([seed, stream, _SPLITS[split], index])
        self.values: list[float] = []
        self.next = 0

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        if self.next == len(self.values):
            self.values += self.rng.random(64).tolist()
        self.next += 1
        return low + (high - low) * self.values[self.next - 1]

    def integer(self, high: int) -> int:
        """Uniform in ``range(high)``."""
        return min(int(self.uniform(0, high)), high - 1)


def _background(draw: _Draws, height: int, width: int, difficulty: Difficulty, pan: int = 0) -> np.ndarray:
    """A crop of a photo (random zoom and flip) or a procedural texture, dimmed; ``pan`` extra columns on the
    right for a panning camera, fewer if the photo is too narrow."""
    kind = difficulty.background
    if kind == "mixed":
        kind = "photo" if draw.uniform() < 0.5 else "texture"
    if kind == "texture":
        out = procedural_texture(height, width + pan, draw.rng)
    else:
        pool = resized_photos(max(height, width) * (1 + draw.integer(3)))  # 1x, 2x or 3x zoomed in
        photo = pool[draw.integer(len(pool))]
        pan = min(pan, photo.shape[1] - width)
        top, left = draw.integer(photo.shape[0] - height + 1), draw.integer(photo.shape[1] - width - pan + 1)
        out = photo[top : top + height, left : left + width + pan]
        if draw.uniform() < 0.5:
            out = out[:, ::-1]
    if difficulty.background_strength == 1.0:
        return out  # a view: render copies it
    return out * np.float32(difficulty.background_strength)


GROUND = (2.25, 2.5, 0.0)  # metres: depth at the bottom edge, rise to the top edge, sideways tilt


def _ground(draw: _Draws, height: int, width: int) -> tuple[np.ndarray, Callable[[float, float], float]]:
    """Depth of the ground plane, the same in every scene (:data:`GROUND`): near at the bottom, far at the top.

    Nothing in an image shows a plane of its own (the background is a photo crop), so a per-scene plane would be
    depth no model can read off the image. Three draws are still taken, as when the plane was random, so every
    later draw of a scene — and so its image — is what it was."""
    draw.uniform(1.5, 3.0), draw.uniform(1.0, 4.0), draw.uniform(-1.0, 1.0)
    base, tilt_y, tilt_x = GROUND

    def at(x, y):
        return base + tilt_y * (1 - y / height) + tilt_x * (x / width - 0.5)

    y = np.arange(height, dtype=np.float32)[:, None] + 0.5
    x = np.arange(width, dtype=np.float32)[None, :] + 0.5
    return np.asarray(at(x, y), np.float32), at


def _object(draw: _Draws, size: tuple[float, float], side: int, max_rotation: float) -> SceneObject:
    colour = [draw.uniform(), draw.uniform(), draw.uniform()]
    return SceneObject(
        shape=draw.integer(len(SHAPES)),
        texture=draw.integer(len(TEXTURES)),
        palette=np.array([[0.0, 0.0, 0.0], colour, [(c + 0.5) % 1.0 for c in colour]], np.float32),
        cx=0.0,
        cy=0.0,
        radius=draw.uniform(*size) * side,
        angle=math.radians(draw.uniform(-max_rotation, max_rotation)),
        depth=0.0,
    )


def _layout(draw: _Draws, height: int, width: int, difficulty: Difficulty, ground_at) -> list[SceneObject]:
    """The main object (slot 0) fully inside the image, the distractors anywhere. The depth set here, the
    ground's below the centre times a random factor, only orders the objects of a sequence; a scene's stand on
    the ground (:func:`contact_depth`)."""
    side = min(height, width)
    low, high = difficulty.num_objects
    count = low + draw.integer(high - low + 1)
    objects = [_object(draw, difficulty.object_size, side, difficulty.max_rotation)]
    objects += [_object(draw, difficulty.distractor_size, side, difficulty.max_rotation) for _ in range(count - 1)]
    for k, obj in enumerate(objects):
        margin = _EXTENT * obj.radius if k == 0 else 0.0
        obj.cx = draw.uniform(margin, width - margin)
        obj.cy = draw.uniform(margin, height - margin)
        obj.depth = ground_at(obj.cx, obj.cy) * draw.uniform(0.5, 0.9)
    return objects


def _keypoints(obj: SceneObject, foot: _Footprint | None, segmentation: np.ndarray, slot: int) -> np.ndarray:
    """The 5 keypoints of ``obj`` (object ``slot``) as (x, y, v), conventions in the module docstring."""
    points, symmetry = _LANDMARKS[SHAPES[obj.shape]]
    angle = obj.angle - symmetry * round(obj.angle / symmetry) if symmetry else 0.0
    cos, sin = math.cos(angle) * obj.radius, math.sin(angle) * obj.radius
    height, width = segmentation.shape
    out = np.zeros((len(points), 3), np.float32)
    slots, targets = [], []
    for k, (u, v) in enumerate(points.tolist()):
        x, y = obj.cx + u * cos - v * sin, obj.cy + u * sin + v * cos
        if 0 <= x < width and 0 <= y < height:  # never for NaN (no landmark)
            slots.append(k)
            targets.append(complex(x, y))
    if foot is None or not slots:
        return out
    height, width = foot.cells.shape
    covered = (segmentation[foot.y0 : foot.y0 + height, foot.x0 : foot.x0 + width] != slot + 1) & (foot.cells > 0)
    visible = [True] * len(slots)
    if covered.any():  # else every landmark is visible: a shortcut for the common case
        rows, cols = np.nonzero(foot.cells)
        centres = (cols + (foot.x0 + 0.5)) + 1j * (rows + (foot.y0 + 0.5))
        nearest = np.abs(centres - np.array(targets)[:, None]).argmin(1)
        visible = (~covered[rows[nearest], cols[nearest]]).tolist()
    for k, target, seen in zip(slots, targets, visible, strict=True):
        out[k] = target.real, target.imag, 2 if seen else 1
    return out


def _size(img_size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))
    if height < 8 or width < 8:
        raise MimlensError(f"img_size must be at least 8 pixels, got {img_size!r}")
    return height, width


def generate_scene(
    index: int, img_size: int | tuple[int, int] = 64, seed: int = 0, split: str = "train", difficulty=None
) -> dict[str, np.ndarray]:
    """Scene ``index`` as numpy arrays (channels last); see the module docstring for every field."""
    difficulty = difficulty or Difficulty()
    height, width = _size(img_size)
    draw = _Draws(seed, _SCENE_STREAM, split, index)
    background = _background(draw, height, width, difficulty)
    ground, ground_at = _ground(draw, height, width)
    objects = _layout(draw, height, width, difficulty, ground_at)
    image, depth, segmentation, footprints = _render(background, ground, objects, ground_at)
    slots = difficulty.num_objects[1]
    boxes, classes = np.zeros((slots, 4), np.float32), np.full(slots, -1, np.int64)
    for k, obj in enumerate(objects):
        if footprints[k] is None:
            continue
        y0, y1, x0, x1 = _window(obj, height, width)
        visible = _box(segmentation[y0:y1, x0:x1] == k + 1, y0, x0)
        if visible is not None:
            boxes[k], classes[k] = visible, obj.shape
    main = objects[0]
    return {
        "image": image,
        "label": np.int64(main.shape),
        "fine_label": np.int64(main.shape * len(TEXTURES) + main.texture),
        "depth": depth,
        "segmentation": segmentation,
        "keypoints": _keypoints(main, footprints[0], segmentation, 0),
        "box": footprints[0].box,
        "boxes": boxes,
        "classes": classes,
    }


def _to_tensors(arrays: dict[str, np.ndarray], index: int) -> dict[str, torch.Tensor]:
    """Channels-first contiguous tensors (``torch.from_numpy``: ``torch.tensor`` of a scalar costs 15 µs)."""
    out = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items() if k not in ("image", "frames", "depth")}
    if "image" in arrays:
        out["image"] = torch.from_numpy(np.ascontiguousarray(arrays["image"].transpose(2, 0, 1)))
    if "depth" in arrays:
        out["depth"] = torch.from_numpy(arrays["depth"][None])
    if "frames" in arrays:
        out["frames"] = torch.from_numpy(np.ascontiguousarray(arrays["frames"].transpose(0, 3, 1, 2)))
    out["index"] = torch.from_numpy(np.asarray(index, dtype=np.int64))
    return out


class SyntheticScenes(Dataset):
    """``num_images`` synthetic scenes, item ``i`` a dict of tensors fully determined by (seed, split, i).

    Keys: ``image``, ``label``, ``fine_label``, ``depth``, ``segmentation``, ``keypoints``, ``box``,
    ``boxes``, ``classes``, ``index`` (conventions in the module docstring). ``transform`` is applied to the
    image tensor only, so a geometric transform leaves the geometric labels behind. ``difficulty`` keywords
    are the fields of :class:`Difficulty`, e.g. ``num_objects=(1, 2), background_strength=0.5``.
    """

    num_classes = len(SHAPES)
    num_fine_classes = len(SHAPES) * len(TEXTURES)

    def __init__(
        self,
        num_images: int,
        img_size: int | tuple[int, int] = 64,
        seed: int = 0,
        *,
        split: str = "train",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **difficulty,
    ):
        if num_images < 1:
            raise MimlensError(f"num_images must be at least 1, got {num_images}")
        self.num_images, self.img_size, self.seed, self.split = num_images, _size(img_size), seed, split
        self.transform = transform
        self.difficulty = Difficulty.from_kwargs(difficulty)
        _Draws(seed, _SCENE_STREAM, split, 0)  # validates the split now rather than in a worker

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"scene index {index} out of range for {self.num_images} scenes")
        item = _to_tensors(generate_scene(index, self.img_size, self.seed, self.split, self.difficulty), index)
        if self.transform is not None:
            item["image"] = self.transform(item["image"])
        return item


@dataclasses.dataclass(frozen=True)
class _Motion:
    """How a sequence's objects move: per object a speed (px per frame), heading and spin (radians per frame);
    the main object's size oscillates by ``amplitude`` with ``period`` frames from ``phase``."""

    velocity: list[float]
    heading: list[float]
    spin: list[float]
    amplitude: float
    period: float
    phase: float


def _film(objects, background, ground, width: int, length: int, pan: int, motion: _Motion):
    """The ``length`` frames of a sequence with the background panning by ``pan`` px: frames, amodal boxes of
    the main object, segmentations, and per frame whether it is fully occluded or out of view."""
    height = background.shape[0]
    start = [dataclasses.replace(obj) for obj in objects]
    frames, boxes = np.empty((length, height, width, 3), np.float32), np.zeros((length, 4), np.float32)
    segmentations = np.empty((length, height, width), np.int64)
    full_occlusion, out_of_view = np.zeros(length, bool), np.zeros(length, bool)
    for t in range(length):
        for k, (obj, first) in enumerate(zip(objects, start, strict=True)):
            obj.cx = first.cx + t * motion.velocity[k] * math.cos(motion.heading[k])
            obj.cy = first.cy + t * motion.velocity[k] * math.sin(motion.heading[k])
            obj.angle = first.angle + t * motion.spin[k]
        growth = math.sin(2 * math.pi * t / motion.period + motion.phase) - math.sin(motion.phase)  # 0 at frame 0
        objects[0].radius = start[0].radius * (1 + motion.amplitude * growth)
        shift = round(t * pan / max(1, length - 1))
        frames[t], _, segmentations[t], amodal = render(background[:, shift : shift + width], ground, objects)
        if amodal[0] is None:
            out_of_view[t] = True
        else:
            boxes[t] = amodal[0]
            full_occlusion[t] = not (segmentations[t] == 1).any()
    return frames, boxes, segmentations, full_occlusion, out_of_view


def generate_sequence(
    index: int, length: int = 16, img_size: int | tuple[int, int] = 64, seed: int = 0, split: str = "train",
    difficulty=None,
) -> dict[str, np.ndarray]:
    """Sequence ``index``: the main object moves, turns and scales over ``length`` frames while distractors
    move in front of or behind it and the background pans.

    Objects move 1–3 px per frame at 64 px (scaled with the image side): over 16 frames the slowest main
    object travels 15 px, about 40 % of the widest first box, so that a box held still loses it. In
    :data:`TWIN_FRACTION` of the sequences with a distractor, the first distractor is the main object's twin:
    same shape, texture, colours and starting size (its own position, angle, motion and depth), so that
    appearance alone cannot tell the target from it. Objects keep one depth each through a sequence (they do
    not stand on the ground).

    Returns ``frames`` (T, H, W, 3), ``boxes`` (T, 4) amodal ``(x, y, w, h)`` clipped to the image (zeros when
    out of view), ``segmentation`` (T, H, W) as for scenes, ``full_occlusion`` and ``out_of_view`` (T,) bool,
    ``twin`` (bool), ``label`` and ``fine_label``.
    """
    difficulty = difficulty or Difficulty()
    height, width = _size(img_size)
    side = min(height, width)
    draw = _Draws(seed, _SEQUENCE_STREAM, split, index)
    speed = side / 64  # pixels per frame at 64 px
    pan = math.ceil(draw.uniform(0, 0.5) * speed * (length - 1))
    background = _background(draw, height, width, difficulty, pan)
    pan = background.shape[1] - width
    ground, ground_at = _ground(draw, height, width)
    objects = _layout(draw, height, width, difficulty, ground_at)
    velocity = [draw.uniform(1.0, 3.0) * speed for _ in objects]  # 15–45 px over 16 frames at 64 px
    heading = [draw.uniform(0, 2 * math.pi) for _ in objects]
    spin = [math.radians(draw.uniform(-3, 3)) for _ in objects]
    amplitude, period, phase = draw.uniform(0, 0.3), draw.uniform(length, 3 * length), draw.uniform(0, 2 * math.pi)
    for obj in objects[1:]:  # distractors in front of or behind the main object, never at its depth
        nearer = draw.uniform() < 0.5
        obj.depth = objects[0].depth * (draw.uniform(0.6, 0.9) if nearer else draw.uniform(1.1, 1.4))
    main = objects[0]
    twin = len(objects) > 1 and draw.uniform() < TWIN_FRACTION  # drawn last: the draws above keep their values
    if twin:
        objects[1].shape, objects[1].texture, objects[1].radius = main.shape, main.texture, main.radius
        objects[1].palette = main.palette
    frames, boxes, segmentations, full_occlusion, out_of_view = _film(
        objects, background, ground, width, length, pan, _Motion(velocity, heading, spin, amplitude, period, phase))
    return {
        "frames": frames,
        "boxes": boxes,
        "segmentation": segmentations,
        "full_occlusion": full_occlusion,
        "out_of_view": out_of_view,
        "twin": np.bool_(twin),
        "label": np.int64(main.shape),
        "fine_label": np.int64(main.shape * len(TEXTURES) + main.texture),
    }


class SyntheticSequences(Dataset):
    """``num_sequences`` tracking sequences of ``length`` frames, item ``i`` determined by (seed, split, i).

    Keys: ``frames`` float32 (T, 3, H, W) in [0, 1], ``boxes`` (T, 4) ``(x, y, w, h)``, ``segmentation``
    (T, H, W), ``full_occlusion`` and ``out_of_view`` (T,) bool, ``twin``, ``label``, ``fine_label``, ``index``.
    Frame 0 always shows the main object inside the image (though perhaps hidden). ``difficulty`` keywords as for
    :class:`SyntheticScenes`.
    """

    def __init__(
        self,
        num_sequences: int,
        length: int = 16,
        img_size: int | tuple[int, int] = 64,
        seed: int = 0,
        *,
        split: str = "train",
        **difficulty,
    ):
        if num_sequences < 1 or length < 1:
            raise MimlensError(f"num_sequences and length must be at least 1, got {num_sequences} and {length}")
        self.num_sequences, self.length, self.img_size = num_sequences, length, _size(img_size)
        self.seed, self.split = seed, split
        self.difficulty = Difficulty.from_kwargs(difficulty)
        _Draws(seed, _SEQUENCE_STREAM, split, 0)

    def __len__(self) -> int:
        return self.num_sequences

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_sequences:
            raise IndexError(f"sequence index {index} out of range for {self.num_sequences} sequences")
        arrays = generate_sequence(index, self.length, self.img_size, self.seed, self.split, self.difficulty)
        item = _to_tensors(arrays, index)
        return item
