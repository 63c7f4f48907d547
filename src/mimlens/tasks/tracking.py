"""Single-object tracking: a one-stream ViT tracker, a centre-heatmap box head, LaSOT metrics and reader.

One-stream (as in OSTrack): template and search patch tokens, each with the backbone's position embedding
resampled to its own grid, are concatenated and pass through the ViT blocks together, so every block
mixes template and search (prefix tokens are not used). Swin is not supported: its shifted windows
partition one feature map, so template and search tokens cannot attend to each other without changing the
architecture; a Swin backbone raises :class:`MimlensError`.

Metric conventions (LaSOT toolkit / pytracking): boxes are (x, y, w, h) in pixels; per frame the IoU with
the ground truth and the distance between box centres (both equal to pytracking's pixel-inclusive forms,
whose ±1 terms cancel); a frame where the target is fully occluded or out of view, or whose ground truth
has w or h <= 0, is a failure in every curve (IoU −1, infinite centre errors) whatever box it carries, as
in pytracking's ``calc_seq_err_robust`` (pytracking/analysis/extract_results.py, LaSOT); every curve is a
fraction of *all* frames of a sequence, then averaged over sequences. Success curve over 21 IoU thresholds
0, 0.05, …, 1 (success means IoU > threshold); SUC/AUC = its mean. Precision = fraction of frames with
centre error <= 20 px; normalised precision = fraction with centre error, measured in units of the
ground-truth width and height, <= 0.2.
The first frame is initialised from ground truth and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou_loss

from mimlens import distributed
from mimlens.accumulate import SumAccumulator
from mimlens.errors import MimlensError
from mimlens.models.family import find_family
from mimlens.tasks.backbone import token_grid, tokens_to_map
from mimlens.tasks.images import crop, load_image, normalize

SUCCESS_THRESHOLDS = torch.linspace(0, 1, 21, dtype=torch.float64)
PRECISION_THRESHOLDS = torch.arange(0, 51, dtype=torch.float64)  # pixels
NORM_PRECISION_THRESHOLDS = torch.arange(0, 51, dtype=torch.float64) / 100
PRECISION_AT, NORM_PRECISION_AT = 20, 20  # indices: 20 px and 0.2


# ---------------------------------------------------------------------------------------------- metrics


def box_iou_xywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU of (N, 4) boxes given as (x, y, w, h)."""
    a, b = a.double(), b.double()
    left = torch.maximum(a[:, 0], b[:, 0])
    top = torch.maximum(a[:, 1], b[:, 1])
    right = torch.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    bottom = torch.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = (right - left).clamp(min=0) * (bottom - top).clamp(min=0)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def sequence_curves(pred: torch.Tensor, gt: torch.Tensor, visible: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Success, precision and normalised-precision curves of one sequence (fractions of all its frames).

    A frame counts only where the target is visible and its ground-truth box has w, h > 0; every other frame
    is a failure at every threshold (IoU −1, infinite centre errors), as in pytracking's
    ``calc_seq_err_robust`` for LaSOT and the LaSOT toolkit, which drops absent frames but divides by all
    frames.

    Args:
        pred, gt: (T, 4) boxes (x, y, w, h) in pixels.
        visible: (T,) booleans, False where the target is fully occluded or out of view.
    """
    if pred.shape != gt.shape or pred.ndim != 2 or pred.shape[1] != 4:
        raise MimlensError(f"predicted boxes {tuple(pred.shape)} and ground truth {tuple(gt.shape)} must both be "
                           "(T, 4)")
    pred, gt = pred.double(), gt.double()
    valid = (gt[:, 2] > 0) & (gt[:, 3] > 0)
    if visible is not None:
        if visible.shape != valid.shape:
            raise MimlensError(f"visibility flags {tuple(visible.shape)} must be ({gt.shape[0]},), one per frame")
        valid = valid & visible.bool()
    iou = torch.where(valid, box_iou_xywh(pred, gt), torch.full_like(gt[:, 0], -1.0))
    offset = (pred[:, :2] + pred[:, 2:] / 2) - (gt[:, :2] + gt[:, 2:] / 2)
    inf = torch.full_like(gt[:, 0], math.inf)
    centre_error = torch.where(valid, offset.norm(dim=1), inf)
    norm_error = torch.where(valid, (offset / gt[:, 2:].clamp(min=1e-12)).norm(dim=1), inf)
    frames = gt.shape[0]
    success = (iou[:, None] > SUCCESS_THRESHOLDS[None]).sum(0) / frames
    precision = (centre_error[:, None] <= PRECISION_THRESHOLDS[None]).sum(0) / frames
    norm_precision = (norm_error[:, None] <= NORM_PRECISION_THRESHOLDS[None]).sum(0) / frames
    return success, precision, norm_precision


class TrackingMetrics(SumAccumulator):
    """LaSOT one-pass evaluation accumulated over sequences (curves summed, divided by the sequence count);
    ``items`` keeps each sequence's (SUC, precision, normalised precision) in evaluation order."""

    def __init__(self) -> None:
        super().__init__(success=(len(SUCCESS_THRESHOLDS),), precision=(len(PRECISION_THRESHOLDS),),
                         norm_precision=(len(NORM_PRECISION_THRESHOLDS),), sequences=())
        self.items: list[tuple[float, float, float]] = []

    def update(self, pred: torch.Tensor, gt: torch.Tensor, visible: torch.Tensor | None = None) -> None:
        """Add one sequence."""
        success, precision, norm_precision = sequence_curves(pred, gt, visible)
        self.add("success", success)
        self.add("precision", precision)
        self.add("norm_precision", norm_precision)
        self.add("sequences", 1)
        self.items.append((float(success.mean()), float(precision[PRECISION_AT]),
                           float(norm_precision[NORM_PRECISION_AT])))

    def per_item(self) -> dict[str, list[float]]:
        """``suc``, ``precision`` and ``norm_precision`` per sequence of every process, in the data set's order
        (:func:`mimlens.distributed.gather_sharded`)."""
        items = distributed.gather_sharded(self.items)
        return {name: [row[i] for row in items] for i, name in enumerate(("suc", "precision", "norm_precision"))}

    def compute(self) -> dict[str, object]:
        n = float(self.sums["sequences"])
        if n == 0:
            raise MimlensError("no tracking sequence was evaluated")
        success = (self.sums["success"] / n).tolist()
        return {
            "suc": sum(success) / len(success),
            "precision": float(self.sums["precision"][PRECISION_AT] / n),
            "norm_precision": float(self.sums["norm_precision"][NORM_PRECISION_AT] / n),
            "success_curve": success,
        }

    def variant(self) -> dict[str, object]:
        return {
            "protocol": "LaSOT one-pass evaluation, first frame initialised from ground truth and counted",
            "suc": "mean of the success curve over IoU thresholds 0, 0.05, ..., 1 (success: IoU > threshold)",
            "precision": "fraction of frames with centre error <= 20 px",
            "norm_precision": "fraction of frames with centre error / ground-truth (w, h) <= 0.2",
            "absent_frames": "fully occluded or out-of-view frames and frames without a ground-truth box are "
                             "failures in every curve (pytracking calc_seq_err_robust, LaSOT)",
            "averaging": "per sequence over all its frames, then over sequences",
            "num_sequences": int(self.sums["sequences"]),
        }


# ---------------------------------------------------------------------------------------------- data


@dataclass
class TrackingSequence:
    """One sequence: frame files (or a (T, 3, H, W) float tensor in [0, 1]), (T, 4) ground-truth boxes
    (x, y, w, h) and (T,) target visibility."""

    name: str
    frames: list[Path] | torch.Tensor
    boxes: torch.Tensor
    visible: torch.Tensor

    def frame(self, index: int) -> torch.Tensor:
        """Frame ``index`` as float RGB (3, H, W) in [0, 1]."""
        return self.frames[index] if torch.is_tensor(self.frames) else load_image(self.frames[index])


def _read_flags(path: Path, frames: int) -> torch.Tensor:
    if not path.is_file():
        return torch.zeros(frames, dtype=torch.bool)
    values = [v for v in path.read_text().replace("\n", ",").split(",") if v.strip()]
    if len(values) != frames:
        raise MimlensError(f"{path} has {len(values)} flags but the sequence has {frames} frames")
    return torch.tensor([int(v) != 0 for v in values])


def read_lasot_sequence(folder: str | Path) -> TrackingSequence:
    """A LaSOT sequence folder: ``img/*.jpg``, ``groundtruth.txt`` (x,y,w,h per line), and optional
    ``full_occlusion.txt`` / ``out_of_view.txt`` (comma-separated 0/1 per frame)."""
    folder = Path(folder)
    gt_file = folder / "groundtruth.txt"
    frames = sorted(p for p in (folder / "img").glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rows = []
    for number, line in enumerate(gt_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.replace("\t", ",").replace(" ", ",").split(",")
        try:
            rows.append([float(v) for v in fields if v])
        except ValueError:
            raise MimlensError(f"{gt_file}:{number}: expected 'x,y,w,h', got {line!r}") from None
        if len(rows[-1]) != 4:
            raise MimlensError(f"{gt_file}:{number}: expected 4 numbers 'x,y,w,h', got {line!r}")
    if not frames or len(frames) != len(rows):
        raise MimlensError(f"{folder}: {len(frames)} frames in img/ but {len(rows)} boxes in groundtruth.txt")
    absent = _read_flags(folder / "full_occlusion.txt", len(rows)) | _read_flags(folder / "out_of_view.txt", len(rows))
    return TrackingSequence(folder.name, frames, torch.tensor(rows, dtype=torch.float64), ~absent)


def find_lasot_sequences(root: str | Path) -> list[TrackingSequence]:
    """Every sequence folder (one holding ``groundtruth.txt``) under ``root``: LaSOT's ``category/seq/``
    layout, a flat folder of sequences, or one sequence."""
    root = Path(root)
    folders = sorted(p.parent for p in root.rglob("groundtruth.txt"))
    if not folders:
        raise MimlensError(f"no LaSOT sequence (a folder with groundtruth.txt and img/) found under {root}")
    return [read_lasot_sequence(f) for f in folders]


def crop_square(image: torch.Tensor, centre: tuple[float, float], side: float, out_size: int) -> torch.Tensor:
    """Square region of side ``side`` px centred at ``centre``, resampled to ``out_size`` (see :func:`crop`)."""
    return crop(image, (centre[0] - side / 2, centre[1] - side / 2, side, side), (out_size, out_size))


def crop_side(box: torch.Tensor | list[float], factor: float) -> float:
    """Side of the square region around a box: factor · sqrt(w·h) (template 2, search 4)."""
    return factor * math.sqrt(max(float(box[2]) * float(box[3]), 1.0))


class TrackingPairs(torch.utils.data.Dataset):
    """(template, search, target) training triples sampled from sequences.

    The template is cropped around the ground truth of one frame, the search region around a jittered
    ground truth of a frame at most ``max_gap`` later; the target is the box in the search crop, as
    (x, y, w, h) fractions of its side. Crops are float RGB in [0, 1] (black outside the frame). Sampling
    draws from torch's RNG (the engine seeds it per sample).
    """

    def __init__(self, sequences: list[TrackingSequence], template_size: int, search_size: int, length: int, *,
                 template_factor: float = 2.0,
                 search_factor: float = 4.0, max_gap: int = 10, centre_jitter: float = 0.75,
                 scale_jitter: float = 0.25) -> None:
        self.sequences = [s for s in sequences if int(self._usable(s).sum()) >= 1]
        if not self.sequences:
            raise MimlensError("no tracking sequence has a visible target with a box")
        self.template_size, self.search_size = template_size, search_size
        self.length, self.template_factor, self.search_factor = length, template_factor, search_factor
        self.max_gap, self.centre_jitter, self.scale_jitter = max_gap, centre_jitter, scale_jitter

    @staticmethod
    def _usable(seq: TrackingSequence) -> torch.Tensor:
        return seq.visible & (seq.boxes[:, 2] > 0) & (seq.boxes[:, 3] > 0)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        seq = self.sequences[index % len(self.sequences)]
        usable = self._usable(seq).nonzero()[:, 0].tolist()
        first = usable[_randint(len(usable))]
        later = [i for i in usable if first <= i <= first + self.max_gap]
        second = later[_randint(len(later))]
        template_box, search_box = seq.boxes[first], seq.boxes[second]
        template = seq.frame(first)
        search = template if second == first else seq.frame(second)
        tcx, tcy = float(template_box[0] + template_box[2] / 2), float(template_box[1] + template_box[3] / 2)
        template_crop = crop_square(template, (tcx, tcy), crop_side(template_box, self.template_factor),
                                    self.template_size)
        size = math.sqrt(float(search_box[2] * search_box[3]))
        jitter = torch.rand(3).double() * 2 - 1
        cx = float(search_box[0] + search_box[2] / 2) + float(jitter[0]) * self.centre_jitter * size
        cy = float(search_box[1] + search_box[3] / 2) + float(jitter[1]) * self.centre_jitter * size
        side = crop_side(search_box, self.search_factor) * math.exp(float(jitter[2]) * self.scale_jitter)
        search_crop = crop_square(search, (cx, cy), side, self.search_size)
        target = torch.tensor([(float(search_box[0]) - (cx - side / 2)) / side,
                               (float(search_box[1]) - (cy - side / 2)) / side,
                               float(search_box[2]) / side, float(search_box[3]) / side])
        return {"template": template_crop, "search": search_crop, "box": target}


def _randint(high: int) -> int:
    return int(torch.randint(high, ()))


# ---------------------------------------------------------------------------------------------- model


def _conv_tower(in_channels: int, channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        nn.Conv2d(channels, out_channels, 1),
    )


class CenterBoxHead(nn.Module):
    """Centre heatmap (logits), box size (w, h as fractions of the search side) and sub-cell centre offset,
    one convolutional tower each, on the search feature map."""

    def __init__(self, in_channels: int, channels: int = 64) -> None:
        super().__init__()
        self.score = _conv_tower(in_channels, channels, 1)
        self.size = _conv_tower(in_channels, channels, 2)
        self.offset = _conv_tower(in_channels, channels, 2)
        nn.init.constant_(self.score[-1].bias, -2.19)  # CenterNet prior: sigmoid ≈ 0.1

    def forward(self, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"score": self.score(fmap)[:, 0], "size": self.size(fmap).sigmoid(),
                "offset": self.offset(fmap).sigmoid()}


def decode_boxes(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, 4) boxes (x, y, w, h) as fractions of the search side, from the cell of maximal score."""
    score = out["score"]
    b, h, w = score.shape
    cell = score.flatten(1).argmax(dim=1)
    return _box_at(out, cell // w, cell % w)


def _box_at(out: dict[str, torch.Tensor], row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    h, w = out["score"].shape[-2:]
    batch = torch.arange(row.shape[0], device=row.device)
    offset = out["offset"][batch, :, row, col]
    size = out["size"][batch, :, row, col]
    cx = (col + offset[:, 0]) / w
    cy = (row + offset[:, 1]) / h
    return torch.stack([cx - size[:, 0] / 2, cy - size[:, 1] / 2, size[:, 0], size[:, 1]], dim=1)


def tracking_loss(out: dict[str, torch.Tensor], box: torch.Tensor, weights: tuple[float, float, float] = (1, 5, 2)
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """Focal loss on the centre heatmap + L1 on (centre, size) + GIoU, weights (1, 5, 2) as in OSTrack.

    The heatmap target is a Gaussian (σ = max(0.5, box size in cells / 6)) peaking at 1 in the cell holding
    the box centre; the focal loss is CenterNet's penalty-reduced form (α 2, β 4), normalised by the batch.
    """
    score = out["score"]
    b, h, w = score.shape
    cx, cy = box[:, 0] + box[:, 2] / 2, box[:, 1] + box[:, 3] / 2
    col = (cx * w).floor().clamp(0, w - 1).long()
    row = (cy * h).floor().clamp(0, h - 1).long()
    sigma = torch.maximum(torch.full_like(cx, 0.5), torch.sqrt(box[:, 2] * w * box[:, 3] * h) / 6)
    ys = torch.arange(h, device=box.device, dtype=box.dtype)
    xs = torch.arange(w, device=box.device, dtype=box.dtype)
    dist2 = (ys[None, :, None] - row[:, None, None]) ** 2 + (xs[None, None, :] - col[:, None, None]) ** 2
    target = torch.exp(-dist2 / (2 * sigma[:, None, None] ** 2))
    prob = score.sigmoid().clamp(1e-4, 1 - 1e-4)
    positive = target == 1
    focal = torch.where(positive, (1 - prob) ** 2 * torch.log(prob),
                        (1 - target) ** 4 * prob**2 * torch.log(1 - prob)).sum() / -b
    pred = _box_at(out, row, col)
    l1 = F.l1_loss(pred, box)
    giou = generalized_box_iou_loss(box_convert(pred, "xywh", "xyxy"), box_convert(box, "xywh", "xyxy"),
                                    reduction="mean")
    total = weights[0] * focal + weights[1] * l1 + weights[2] * giou
    return total, {"focal": float(focal.detach()), "l1": float(l1.detach()), "giou": float(giou.detach())}


def _check_backbone(backbone: nn.Module) -> None:
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(backbone, VisionTransformer):
        kind, family = type(backbone).__name__, find_family(backbone)
        why = ("its shifted windows partition one feature map, so template and search tokens cannot attend to "
               "each other" if family is not None and family.hierarchical
               else "only timm VisionTransformer models are supported")
        raise MimlensError(f"tracking needs a one-stream ViT backbone; {kind} is not supported: {why}")
    if backbone.pos_embed is None:
        raise MimlensError(f"tracking needs a learned or fixed absolute position embedding; {type(backbone).__name__} "
                           "has none (pos_embed is None)")


class OneStreamTracker(nn.Module):
    """Template and search patch tokens through one timm ViT, then :class:`CenterBoxHead` on the search map."""

    def __init__(self, encoder: nn.Module, template_size: int, search_size: int, head_channels: int = 64) -> None:
        super().__init__()
        _check_backbone(encoder)
        encoder.patch_embed.strict_img_size = False
        self.encoder = encoder
        self.template_size, self.search_size = template_size, search_size
        self.template_grid = token_grid(encoder, (template_size, template_size))
        self.search_grid = token_grid(encoder, (search_size, search_size))
        self.head = CenterBoxHead(encoder.num_features, head_channels)
        for name in ("cls_token", "reg_token", "dist_token"):  # one-stream tracking uses patch tokens only
            if isinstance(getattr(encoder, name, None), nn.Parameter):
                getattr(encoder, name).requires_grad_(False)

    def _embed(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        from timm.layers import resample_abs_pos_embed

        bb = self.encoder
        tokens = bb.patch_embed(images)
        if tokens.ndim == 4:  # NHWC when the model was built with dynamic_img_size
            tokens = tokens.flatten(1, 2)
        prefix = 0 if bb.no_embed_class else bb.num_prefix_tokens
        pos = resample_abs_pos_embed(bb.pos_embed[:, prefix:], new_size=list(grid),
                                     old_size=list(bb.patch_embed.grid_size), num_prefix_tokens=0)
        return tokens + pos

    def forward(self, template: torch.Tensor, search: torch.Tensor) -> dict[str, torch.Tensor]:
        bb = self.encoder
        z = self._embed(template, self.template_grid)
        x = self._embed(search, self.search_grid)
        tokens = bb.norm_pre(bb.pos_drop(torch.cat([z, x], dim=1)))
        tokens = bb.norm(bb.blocks(tokens))
        return self.head(tokens_to_map(tokens[:, z.shape[1]:], self.search_grid))


@torch.no_grad()
def track_sequence(model: OneStreamTracker, seq: TrackingSequence, mean: tuple[float, ...], std: tuple[float, ...],
                   template_factor: float = 2.0, search_factor: float = 4.0) -> torch.Tensor:
    """Run the tracker over a sequence: the template comes from frame 0 and its ground-truth box (also the
    first output); each later search region is centred on the previous prediction. Returns (T, 4) boxes."""
    model.eval()
    device = next(model.parameters()).device
    box = seq.boxes[0].tolist()
    centre = (box[0] + box[2] / 2, box[1] + box[3] / 2)
    template = crop_square(seq.frame(0), centre, crop_side(box, template_factor), model.template_size)
    template = normalize(template, mean, std)[None].to(device)
    boxes = [box]
    for index in range(1, len(seq.boxes)):
        image = seq.frame(index)
        height, width = image.shape[-2:]
        centre = (box[0] + box[2] / 2, box[1] + box[3] / 2)
        side = crop_side(box, search_factor)
        search = normalize(crop_square(image, centre, side, model.search_size), mean, std)[None].to(device)
        x, y, w, h = (decode_boxes(model(template, search))[0].double().cpu() * side).tolist()
        x, y = x + centre[0] - side / 2, y + centre[1] - side / 2
        x0, y0 = min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)
        x1, y1 = min(max(x + w, x0 + 1.0), float(width)), min(max(y + h, y0 + 1.0), float(height))
        box = [x0, y0, x1 - x0, y1 - y0]
        boxes.append(box)
    return torch.tensor(boxes, dtype=torch.float64)
