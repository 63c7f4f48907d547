"""Object detection (the paper's "combined" task family): torchvision's Faster R-CNN on a timm backbone.

Two feature pyramids turn a backbone into the multi-scale maps Faster R-CNN expects:

- plain ViTs (:class:`SimpleFeaturePyramid`, ViTDet, Li et al. 2022): the last block's patch-token map at
  stride s (the patch size; final norm applied, prefix tokens dropped) is rescaled by 4, 2, 1 and ½ —
  two 2×2 deconvolutions, one, none, a 2×2 max-pool — to strides s/4, s/2, s and 2s, each followed by a
  1×1 and a 3×3 convolution with LayerNorm; a stride-4s level subsampled from the last one feeds the RPN
  only. A 64 px ViT with patch 8 gives maps of 32, 16, 8, 4 and 2 cells (strides 2, 4, 8, 16, 32).
- Swin / SwinV2 (:class:`StagePyramid`): every stage's output (NHWC → NCHW, one LayerNorm per stage as in
  the official Swin detection backbone) at strides p, 2p, 4p, … (p = patch size) goes through
  ``torchvision.ops.FeaturePyramidNetwork`` plus its stride-doubling ``LastLevelMaxPool`` level. The
  3-stage 64 px preset gives strides 4, 8, 16 and 32.

Levels are named ``"0"``, ``"1"``, … from fine to coarse, plus ``"pool"`` (torchvision's convention). Every
stride must be a power of two, because torchvision's RoI pooler rounds the map/image ratio to one.
Anchors: one size per level, ``anchor_scale`` × the level's stride (4 by default, so 8–128 px on a 64 px
ViT input), each at the aspect ratios (h/w) 0.5, 1 and 2. The RoI pooler (RoIAlign 7×7, adaptive sampling
as in Detectron2) reads every level except ``"pool"`` and assigns a box of side √(wh) to level
⌊4 + log2(√(wh)/224)⌋ — level k is stride 2^k — clamped to the pyramid.

Input images are square, already ``image_size`` pixels (see ``detection_data.letterbox``), floats in
[0, 1]; the detector normalises them with the backbone's mean and std. Labels are 1…K (0 = background).
Training returns torchvision's four losses, :data:`LOSS_NAMES`.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from typing import Any

import torch
from timm.layers import LayerNorm2d
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from mimlens.errors import MimlensError
from mimlens.models.family import family_of
from mimlens.tasks.backbone import feature_map

__all__ = [
    "LOSS_NAMES",
    "DetectionObjective",
    "SimpleFeaturePyramid",
    "StagePyramid",
    "build_detector",
    "feature_pyramid",
]

#: torchvision's Faster R-CNN losses: RPN objectness and box regression, RoI classifier and box regression.
LOSS_NAMES = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg")
VIT_SCALES = (4.0, 2.0, 1.0, 0.5)
POOL = "pool"


def _rescale(scale: float, dim: int) -> tuple[nn.Module, int]:
    """ViTDet's rescaling stage for one ``scale`` and its output width."""
    if scale == 4.0:
        return nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2), nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2),
        ), dim // 4
    if scale == 2.0:
        return nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), dim // 2
    if scale == 1.0:
        return nn.Identity(), dim
    if scale == 0.5:
        return nn.MaxPool2d(2, stride=2), dim
    raise MimlensError(f"simple feature pyramid scales must be among 4, 2, 1 and 0.5, got {scale}")


class _Pyramid(nn.Module):
    """Shared part: names, strides found by one forward pass, the stride check and the precision policy.

    ``amp_dtype`` (set by :class:`DetectionObjective` from the caller's autocast) is the autocast dtype of the
    backbone and pyramid; their maps leave in float32, so the RPN and RoI heads, which run outside autocast,
    keep box coordinates exact (bfloat16's 8-bit mantissa cannot hold a coordinate of 300 px to a pixel).
    """

    out_channels: int
    amp_dtype: torch.dtype | None = None

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        amp = (torch.autocast(images.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
               else contextlib.nullcontext())
        with amp:
            maps = self._maps(images)
        return OrderedDict((name, fmap.float()) for name, fmap in maps.items())

    def _measure(self, image_size: int) -> None:
        param = next(self.parameters())
        was_training = self.training
        self.eval()
        with torch.no_grad():
            maps = self(torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype))
        self.train(was_training)
        self.strides: dict[str, int] = {}
        for name, fmap in maps.items():
            stride = image_size / fmap.shape[-1]
            if fmap.shape[-1] != fmap.shape[-2] or stride != 2 ** round(math.log2(stride)):
                raise MimlensError(
                    f"pyramid level {name!r} is {fmap.shape[-2]}x{fmap.shape[-1]} on a {image_size} px input: the "
                    "RoI pooler needs square maps at power-of-two strides (choose an image size that the patch "
                    "size divides into a power-of-two stride)")
            self.strides[name] = int(stride)

    @property
    def roi_levels(self) -> list[str]:
        """The levels the RoI pooler reads: all but ``"pool"``."""
        return [name for name in self.strides if name != POOL]


class SimpleFeaturePyramid(_Pyramid):
    """ViTDet's simple feature pyramid on a plain ViT's last patch-token map (strides s/4, s/2, s, 2s, 4s)."""

    def __init__(self, backbone: nn.Module, image_size: int, out_channels: int = 64,
                 scales: tuple[float, ...] = VIT_SCALES) -> None:
        super().__init__()
        self.body = backbone
        self.out_channels = out_channels
        dim = int(backbone.num_features)
        levels = []
        for scale in sorted(scales, reverse=True):
            rescale, width = _rescale(float(scale), dim)
            levels.append(nn.Sequential(
                rescale,
                nn.Conv2d(width, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels),
            ))
        self.levels = nn.ModuleList(levels)
        self.top = LastLevelMaxPool()
        self._measure(image_size)

    def _maps(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        fmap = feature_map(self.body, images)
        maps = [level(fmap) for level in self.levels]
        names = [str(i) for i in range(len(maps))]
        maps, names = self.top(maps, [], names)
        return OrderedDict(zip(names, maps, strict=True))


class StagePyramid(_Pyramid):
    """FPN over the stage outputs of a hierarchical backbone (Swin / SwinV2), one LayerNorm per stage."""

    def __init__(self, backbone: nn.Module, image_size: int, out_channels: int = 64) -> None:
        super().__init__()
        self.body = backbone
        self.out_channels = out_channels
        param = next(backbone.parameters())
        with torch.no_grad():
            was_training = backbone.training
            stages = backbone.eval().forward_intermediates(
                torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype),
                intermediates_only=True, output_fmt="NCHW")
            backbone.train(was_training)
        widths = [s.shape[1] for s in stages]
        self.norms = nn.ModuleList(LayerNorm2d(w) for w in widths)
        self.fpn = FeaturePyramidNetwork(widths, out_channels, extra_blocks=LastLevelMaxPool())
        self._measure(image_size)

    def _maps(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        stages = self.body.forward_intermediates(images, intermediates_only=True, output_fmt="NCHW")
        return self.fpn(OrderedDict((str(i), norm(s)) for i, (norm, s) in enumerate(zip(self.norms, stages,
                                                                                          strict=True))))


def feature_pyramid(backbone: nn.Module, image_size: int, out_channels: int = 64,
                    scales: tuple[float, ...] = VIT_SCALES) -> _Pyramid:
    """The pyramid that fits the backbone: stage FPN for Swin-family models, else the simple pyramid."""
    if family_of(backbone).hierarchical:
        return StagePyramid(backbone, image_size, out_channels)
    return SimpleFeaturePyramid(backbone, image_size, out_channels, scales)


def build_detector(
    backbone: nn.Module,
    num_classes: int,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    out_channels: int = 64,
    scales: tuple[float, ...] = VIT_SCALES,
    anchor_scale: float = 4.0,
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
    proposals: int = 300,
    rois_per_image: int = 128,
    box_head_dim: int = 256,
    score_thresh: float = 0.05,
    detections_per_img: int = 100,
) -> FasterRCNN:
    """torchvision Faster R-CNN with a feature pyramid on ``backbone``, anchors and RoI pooler matched to it.

    Args:
        num_classes: object categories, background excluded (labels 1…num_classes).
        image_size: side of the square inputs in pixels; the detector neither resizes nor pads them.
        mean, std: the backbone's input normalisation (images arrive in [0, 1]).
        out_channels: width of every pyramid level.
        scales: ViT only, the simple pyramid's rescaling factors (a subset of 4, 2, 1, 0.5).
        anchor_scale: anchor side in units of the level's stride.
        proposals: RPN proposals kept after NMS per image (training and testing).
        rois_per_image: proposals sampled per training image for the RoI head (a quarter at most positive);
            torchvision's 512 makes RoIAlign's backward pass dominate a CPU step on images with few objects.
        box_head_dim: width of the two-layer MLP box head.
        score_thresh, detections_per_img: test-time filtering (0.05 and 100 match COCO's maxDets).
    """
    if num_classes < 1:
        raise MimlensError(f"a detector needs at least one object category, got {num_classes}")
    pyramid = feature_pyramid(backbone, image_size, out_channels, scales)
    anchors = AnchorGenerator(
        sizes=tuple((anchor_scale * stride,) for stride in pyramid.strides.values()),
        aspect_ratios=(tuple(aspect_ratios),) * len(pyramid.strides),
    )
    pooler = MultiScaleRoIAlign(featmap_names=pyramid.roi_levels, output_size=7, sampling_ratio=0)
    return FasterRCNN(
        pyramid,
        min_size=image_size, max_size=image_size, size_divisible=image_size,
        image_mean=list(mean), image_std=list(std),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=2 * proposals, rpn_pre_nms_top_n_test=2 * proposals,
        rpn_post_nms_top_n_train=proposals, rpn_post_nms_top_n_test=proposals,
        box_roi_pool=pooler,
        box_head=TwoMLPHead(out_channels * 7 * 7, box_head_dim),
        box_predictor=FastRCNNPredictor(box_head_dim, num_classes + 1),
        box_batch_size_per_image=rois_per_image,
        box_score_thresh=score_thresh, box_detections_per_img=detections_per_img,
    )


class DetectionObjective(nn.Module):
    """The detector as a training objective (``mimlens.engine`` contract).

    A batch holds ``image`` (B, 3, S, S) in [0, 1], ``boxes`` (B, M, 4) x1y1x2y2 pixels and ``labels`` (B, M)
    with ``0`` marking unused slots (see ``detection_data.DetectionTransform``). Returns the total ``loss`` and
    each of :data:`LOSS_NAMES`, which the training loop logs as its own column of ``log.jsonl``. Under autocast
    only the backbone and pyramid run in reduced precision (see :class:`_Pyramid`).
    """

    def __init__(self, detector: FasterRCNN) -> None:
        super().__init__()
        self.detector = detector

    @property
    def encoder(self) -> nn.Module:
        """The timm backbone (exported as ``backbone.safetensors`` in timm key names)."""
        return self.detector.backbone.body

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        targets = [{"boxes": boxes[labels > 0], "labels": labels[labels > 0]}
                   for boxes, labels in zip(batch["boxes"], batch["labels"], strict=True)]
        device = batch["image"].device.type
        pyramid = self.detector.backbone
        pyramid.amp_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        try:
            with torch.autocast(device, enabled=False):
                losses = self.detector(list(batch["image"].float()), targets)
        finally:
            pyramid.amp_dtype = None
        return {"loss": sum(losses[name] for name in LOSS_NAMES), **{name: losses[name] for name in LOSS_NAMES}}

    def param_groups(self, weight_decay: float, layer_decay: float) -> list[dict]:
        """Layer-wise lr decay over the backbone's blocks; pyramid, RPN and RoI heads at the full lr."""
        from mimlens.engine.layer_decay import layer_decay_param_groups

        pyramid = self.detector.backbone
        heads = nn.ModuleList([m for name, m in pyramid.named_children() if name != "body"]
                              + [self.detector.rpn, self.detector.roi_heads])
        return layer_decay_param_groups(self.encoder, weight_decay, layer_decay, heads=heads)


def detector_variant(detector: FasterRCNN, eval_set, results: list[dict], size: int) -> dict[str, Any]:
    """The metric variant of a detection run: metric, detector layout, input handling and counts."""
    from mimlens.tasks.detection_eval import METRIC_VARIANT

    pyramid = detector.backbone
    kind = "simple feature pyramid (ViTDet)" if isinstance(pyramid, SimpleFeaturePyramid) else "stage FPN"
    sizes = [float(s[0]) for s in detector.rpn.anchor_generator.sizes]
    return {
        "metric": METRIC_VARIANT,
        "values": "fractions in [0, 1] (x100 for COCO's percentages); null where an area range has no ground truth",
        "detector": f"torchvision Faster R-CNN, {kind}, strides {list(pyramid.strides.values())}, anchors {sizes} "
                    "px at aspect ratios " + str(list(detector.rpn.anchor_generator.aspect_ratios[0])),
        "input": f"letterboxed to {size}x{size} px; boxes scored in original image pixels",
        "num_images": len(eval_set),
        "num_instances": len(eval_set.coco.getAnnIds()),
        "num_detections": len(results),
    }
