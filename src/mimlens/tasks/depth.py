"""Monocular depth estimation: a deconvolution decoder, the SILog loss, the NYUv2/KITTI metrics and a reader.

Metric conventions (those of the BTS / Monodepth / GLPDepth evaluation code):
- valid pixels: ``min_depth < gt < max_depth`` inside the crop (Eigen crop for NYUv2, Garg crop for KITTI);
- predictions are clamped to [min_depth, max_depth] and compared with ground truth at its own resolution;
- every metric is computed per image over its valid pixels, then averaged over images (images without a
  valid pixel are skipped);
- SILog = 100 · sqrt(mean(e²) − mean(e)²) with e = ln(pred) − ln(gt), i.e. 100 × the standard deviation of
  the log error (the KITTI depth benchmark form); log10 = mean |log10 pred − log10 gt|.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mimlens import distributed
from mimlens.accumulate import SumAccumulator
from mimlens.errors import MimlensError
from mimlens.tasks.backbone import feature_map, feature_shape
from mimlens.tasks.images import load_image, resize

METRICS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")

# (top, bottom, left, right) as fractions of the image: Eigen's NYUv2 crop is rows 45:471, cols 41:601 of
# 480x640; Garg's KITTI crop is the fractions used by the Monodepth evaluation.
CROPS = {
    "none": None,
    "eigen": (45 / 480, 471 / 480, 41 / 640, 601 / 640),
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
}

DEPTH_PNG_SCALE = 1000.0  # 16-bit depth PNGs hold millimetres


def crop_mask(height: int, width: int, crop: str = "none") -> torch.Tensor:
    """Boolean (H, W) mask of the evaluation crop; crop rows/cols are the fractions above, truncated to int."""
    if crop not in CROPS:
        raise MimlensError(f"unknown depth crop {crop!r}; expected one of {', '.join(CROPS)}")
    mask = torch.zeros(height, width, dtype=torch.bool)
    if CROPS[crop] is None:
        mask[:] = True
        return mask
    top, bottom, left, right = CROPS[crop]
    mask[int(top * height):int(bottom * height), int(left * width):int(right * width)] = True
    return mask


def per_image_metrics(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image depth metrics over valid pixels.

    Args:
        pred, gt: (B, H, W) depths in metres; pred must already be clamped to the valid range.
        valid: (B, H, W) boolean mask.

    Returns:
        (B, 9) float64 metrics in the order of :data:`METRICS`, and a (B,) mask of images with a valid pixel.
    """
    pred, gt = pred.double(), gt.double()
    w = valid.double()
    count = w.sum(dim=(1, 2))
    has_valid = count > 0
    n = count.clamp(min=1)
    safe_pred = torch.where(valid, pred, torch.ones_like(pred))
    safe_gt = torch.where(valid, gt, torch.ones_like(gt))

    def mean(x: torch.Tensor) -> torch.Tensor:
        return (x * w).sum(dim=(1, 2)) / n

    ratio = torch.maximum(safe_gt / safe_pred, safe_pred / safe_gt)
    diff = safe_pred - safe_gt
    log_err = torch.log(safe_pred) - torch.log(safe_gt)
    mean_log_err = mean(log_err)
    mean_sq_log_err = mean(log_err**2)
    metrics = torch.stack(
        [
            mean((ratio < 1.25).double()),
            mean((ratio < 1.25**2).double()),
            mean((ratio < 1.25**3).double()),
            mean(diff.abs() / safe_gt),
            mean(diff**2 / safe_gt),
            mean(diff**2).sqrt(),
            mean_sq_log_err.sqrt(),
            mean(log_err.abs()) / math.log(10.0),
            100.0 * (mean_sq_log_err - mean_log_err**2).clamp(min=0).sqrt(),
        ],
        dim=1,
    )
    return metrics, has_valid


class DepthMetrics(SumAccumulator):
    """Streaming NYUv2/KITTI depth metrics: sums of per-image values and the image count; ``items`` keeps each
    image's metrics in evaluation order (None for an image without a valid pixel)."""

    def __init__(self, min_depth: float, max_depth: float, crop: str = "none") -> None:
        if not 0 <= min_depth < max_depth:
            raise MimlensError(f"depth range must satisfy 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        crop_mask(1, 1, crop)
        super().__init__(metric_sums=(len(METRICS),), images=())
        self.min_depth, self.max_depth, self.crop = float(min_depth), float(max_depth), crop
        self.items: list[list[float] | None] = []

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Add a batch: ``pred`` and ``gt`` are (B, H, W) or (B, 1, H, W) depths in metres at gt's resolution."""
        pred, gt = _squeeze_channel(pred), _squeeze_channel(gt)
        if pred.shape != gt.shape:
            raise MimlensError(f"depth prediction shape {tuple(pred.shape)} differs from ground truth "
                               f"{tuple(gt.shape)}")
        valid = (gt > self.min_depth) & (gt < self.max_depth) & crop_mask(*gt.shape[-2:], self.crop).to(gt.device)
        pred = pred.detach().clamp(self.min_depth, self.max_depth)
        metrics, has_valid = per_image_metrics(pred, gt.detach(), valid)
        self.add("metric_sums", metrics[has_valid].sum(dim=0))
        self.add("images", has_valid.sum())
        self.items += [row.tolist() if ok else None for row, ok in zip(metrics, has_valid, strict=True)]

    def per_item(self) -> dict[str, list[float | None]]:
        """Each metric per image of every process, in the data set's order
        (:func:`mimlens.distributed.gather_sharded`); None for an image without a valid pixel."""
        items = distributed.gather_sharded(self.items)
        return {name: [None if row is None else row[i] for row in items] for i, name in enumerate(METRICS)}

    def compute(self) -> dict[str, float]:
        images = float(self.sums["images"])
        if images == 0:
            raise MimlensError("no image with a valid depth pixel was evaluated")
        return {name: float(v) / images for name, v in zip(METRICS, self.sums["metric_sums"], strict=True)}

    def variant(self) -> dict[str, object]:
        """How the numbers were computed, to store next to them."""
        return {
            "crop": self.crop,
            "min_depth": self.min_depth,
            "max_depth": self.max_depth,
            "averaging": "per image over valid pixels (min_depth < gt < max_depth in the crop), then over images",
            "prediction": "clamped to [min_depth, max_depth], bilinearly resized to the ground-truth resolution",
            "silog": "100 * sqrt(mean(e^2) - mean(e)^2), e = ln(pred) - ln(gt)",
            "num_images": int(self.sums["images"]),
        }


def _squeeze_channel(x: torch.Tensor) -> torch.Tensor:
    return x[:, 0] if x.ndim == 4 and x.shape[1] == 1 else x


def silog_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, variance_focus: float = 0.85,
               scale: float = 10.0) -> torch.Tensor:
    """BTS's SILog training loss, per image: scale · sqrt(mean(e²) − λ·mean(e)²) with e = ln pred − ln gt over
    the image's valid pixels, averaged over the images of the batch (0 for an image without valid pixels).

    BTS takes one SILog over all valid pixels of a GPU's batch, so its loss depends on how a batch is split over
    processes; the per-image mean does not, and N processes train what one process trains on the same batch.
    """
    b = pred.shape[0]
    pred, gt, valid = pred.reshape(b, -1), gt.reshape(b, -1), valid.reshape(b, -1)
    err = torch.where(valid, torch.log(pred.clamp(min=1e-12)) - torch.log(gt.clamp(min=1e-12)), 0.0)
    count = valid.sum(1)
    mean = err.sum(1) / count.clamp(min=1)
    mean_sq = (err**2).sum(1) / count.clamp(min=1)
    per_image = scale * (mean_sq - variance_focus * mean**2).clamp(min=1e-12).sqrt()
    return torch.where(count > 0, per_image, 0.0 * per_image).mean()


class DepthDecoder(nn.Module):
    """Deconvolution decoder: ``num_deconv`` × (ConvTranspose 4×4 stride 2 + BN + ReLU), a 3×3 conv to one
    channel, bilinear upsampling to the output size, and depth = sigmoid · max_depth."""

    def __init__(self, in_channels: int, max_depth: float, channels: int = 64, num_deconv: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_deconv):
            layers += [
                nn.ConvTranspose2d(in_channels if i == 0 else channels, channels, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        self.deconv = nn.Sequential(*layers)
        self.predict = nn.Conv2d(channels if num_deconv else in_channels, 1, 3, padding=1)
        self.max_depth = float(max_depth)

    def forward(self, fmap: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.predict(self.deconv(fmap))
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        return torch.sigmoid(x[:, 0]) * self.max_depth


class DepthModel(nn.Module):
    """Backbone (``encoder``) + :class:`DepthDecoder` (``head``) on its last feature map (ViT patch grid, or
    Swin's last stage)."""

    def __init__(self, encoder: nn.Module, image_size: tuple[int, int], max_depth: float, channels: int = 64,
                 num_deconv: int = 3) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = DepthDecoder(feature_shape(encoder, image_size)[0], max_depth, channels, num_deconv)

    def forward(self, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, 3, H, W) → (B, *size) depths in metres (``size`` defaults to the input size)."""
        return self.head(feature_map(self.encoder, images), size or images.shape[-2:])


def read_depth(path: str | Path) -> torch.Tensor:
    """(H, W) float32 depth in metres from a 16-bit PNG in millimetres or a float ``.npy`` in metres."""
    path = Path(path)
    if path.suffix == ".npy":
        array = np.load(path)
        if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
            array = array.squeeze()
        if array.ndim != 2:
            raise MimlensError(f"depth file {path} must hold an (H, W) array, got shape {array.shape}")
        return torch.from_numpy(array.astype(np.float32))
    try:
        with Image.open(path) as img:
            array = np.asarray(img)
    except OSError as err:
        raise MimlensError(f"cannot read depth image {path}: {err}") from None
    if array.ndim != 2 or array.dtype not in (np.uint16, np.int32):
        raise MimlensError(f"depth image {path} must be a single-channel 16-bit PNG in millimetres, "
                           f"got {array.dtype} with shape {array.shape}")
    return torch.from_numpy(array.astype(np.float32) / DEPTH_PNG_SCALE)


def find_depth_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """RGB + depth pairs under ``root``.

    Two layouts: a list file (each line ``RGB DEPTH [...]``, paths relative to the file's folder, extra
    columns such as the focal length ignored — the BTS split format), or a folder with ``rgb/`` and ``depth/``
    sub-folders whose files are paired by name stem (depth as ``.png`` or ``.npy``).
    """
    root = Path(root)
    if root.is_file():
        pairs = []
        for number, line in enumerate(root.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise MimlensError(f"{root}:{number}: expected 'RGB_PATH DEPTH_PATH', got {line!r}")
            pairs.append((root.parent / fields[0], root.parent / fields[1]))
    elif (root / "rgb").is_dir() and (root / "depth").is_dir():
        depths = {p.stem: p for p in sorted((root / "depth").iterdir()) if p.suffix in (".png", ".npy")}
        pairs = [(p, depths[p.stem]) for p in sorted((root / "rgb").iterdir()) if p.stem in depths]
    else:
        raise MimlensError(f"depth data {root} must be a list file or a folder with rgb/ and depth/ sub-folders")
    if not pairs:
        raise MimlensError(f"no RGB + depth pair found in {root}")
    for rgb, depth in pairs:
        for path in (rgb, depth):
            if not path.is_file():
                raise MimlensError(f"depth data {root}: file {path} does not exist")
    return pairs


class DepthPairs(torch.utils.data.Dataset):
    """RGB + depth pairs: ``image`` (float in [0, 1]) resized to ``image_size``, ``depth`` (H, W) in metres at
    its own resolution."""

    def __init__(self, root: str | Path, image_size: tuple[int, int]) -> None:
        from mimlens.data.listing import PackedStrings

        pairs = find_depth_pairs(root)
        self.rgb = PackedStrings.pack([str(rgb) for rgb, _ in pairs])  # no Python object per pair
        self.depth = PackedStrings.pack([str(depth) for _, depth in pairs])
        self.image_size = tuple(image_size)

    def __len__(self) -> int:
        return len(self.rgb)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rgb_path, depth_path = Path(self.rgb[index]), Path(self.depth[index])
        image = load_image(rgb_path)
        depth = read_depth(depth_path)
        if tuple(depth.shape) != tuple(image.shape[-2:]):
            raise MimlensError(f"depth {depth_path} is {tuple(depth.shape)} but image {rgb_path} is "
                               f"{tuple(image.shape[-2:])}")
        return {"image": resize(image, self.image_size), "depth": depth}
