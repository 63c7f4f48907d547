"""2-D keypoint ("pose") estimation, top-down: crops from ground-truth boxes, a heatmap head, COCO keypoint AP.

Conventions (HRNet / SimpleBaseline, deep-high-resolution-net.pytorch):
- the ground-truth-box protocol: every non-crowd person box with positive size and at least one labelled
  keypoint (v > 0), in training and evaluation alike; boxes without one are skipped and counted, as in
  HRNet's ``_load_coco_keypoint_annotation_kernal`` (lib/dataset/coco.py: ``max(keypoints) == 0``);
- coordinates are continuous pixels (pixel i spans [i, i+1)), for keypoints and boxes alike;
- a person box is grown to the input aspect ratio and scaled by 1.25 (SimpleBaseline), then resampled to
  the input size; heatmap pixel j covers crop x ∈ [x0 + j·w/W_hm, x0 + (j+1)·w/W_hm), so flipping needs no
  one-pixel shift;
- targets are unnormalised Gaussians (peak 1) of ``sigma`` heatmap pixels at the keypoint; invisible
  (v = 0) or out-of-crop keypoints get weight 0; loss = mean of weight · (pred − target)²;
- decoding is HRNet's ``get_final_preds`` (lib/core/inference.py): the argmax (heatmap pixel 0, 0 where the
  maximum is <= 0), shifted a quarter pixel towards the larger neighbour in x and y only when
  1 < x < W − 1 and 1 < y < H − 1; an instance's score is the mean of its keypoint maxima above 0.2 (times
  the box score, 1 for ground-truth boxes); no OKS NMS (HRNet runs one at OKS 0.9 even on ground-truth boxes);
- AP/AR over OKS 0.50:0.95 come from pycocotools ``COCOeval(iouType='keypoints')`` with per-keypoint sigmas.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mimlens.errors import MimlensError
from mimlens.tasks.backbone import feature_map, feature_shape
from mimlens.tasks.images import crop, load_image

AP_NAMES = ("ap", "ap50", "ap75", "ap_medium", "ap_large", "ar", "ar50", "ar75", "ar_medium", "ar_large")
BOX_PADDING = 1.25
SCORE_THRESHOLD = 0.2


# ---------------------------------------------------------------------------------------------- evaluation


def load_coco(ann_file: str | Path):
    """A pycocotools ``COCO`` index of a keypoint annotation file, quietly; parsed once per process
    (:func:`mimlens.tasks.coco_files.parsed_once`), so callers share it and must not change it."""
    from mimlens.tasks.coco_files import parsed_once

    path = Path(ann_file)
    if not path.is_file():
        raise MimlensError(f"COCO keypoint file {path} does not exist")
    return parsed_once(path, _parse_coco)


def _parse_coco(path: Path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            coco = COCO(str(path))
        except (ValueError, KeyError, TypeError) as err:
            raise MimlensError(f"{path} is not a COCO annotation file: {err}") from None
    coco.dataset["source"] = str(path)
    return coco


def keypoint_sigmas(coco, sigmas: list[float] | None = None) -> np.ndarray:
    """Per-keypoint OKS sigmas: given ones, else a category's ``sigmas`` field, else COCO's 17 defaults."""
    from pycocotools.cocoeval import Params

    cats = coco.loadCats(coco.getCatIds())
    num_keypoints = len(cats[0].get("keypoints", [])) if cats else 0
    if sigmas is None:
        sigmas = cats[0].get("sigmas") if cats else None
    if sigmas is None:
        default = Params(iouType="keypoints").kpt_oks_sigmas
        if num_keypoints != len(default):
            raise MimlensError(f"the COCO categories name {num_keypoints} keypoints: give their OKS sigmas "
                               "(a 'sigmas' list in the category, or the 'sigmas' option); COCO's defaults "
                               f"cover {len(default)}")
        return default
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if num_keypoints and len(sigmas) != num_keypoints:
        raise MimlensError(f"{len(sigmas)} OKS sigmas given for {num_keypoints} keypoints")
    return sigmas


def coco_keypoint_eval(coco_gt, results: list[dict], sigmas: np.ndarray | None = None) -> dict[str, float]:
    """AP/AR over OKS thresholds 0.50:0.95 by pycocotools ``COCOeval(iouType='keypoints')``.

    Args:
        coco_gt: a pycocotools ``COCO`` with the ground truth.
        results: COCO keypoint results (``image_id``, ``category_id``, ``keypoints`` [x, y, s]·K, ``score``).
        sigmas: per-keypoint OKS sigmas (defaults to :func:`keypoint_sigmas`).
    """
    return coco_keypoint_eval_images(coco_gt, results, sigmas)[0]


def coco_keypoint_eval_images(coco_gt, results: list[dict], sigmas: np.ndarray | None = None
                              ) -> tuple[dict[str, float], list[dict]]:
    """:func:`coco_keypoint_eval` and one record per ground-truth image (ascending image id) from which
    :func:`keypoint_ap` recomputes the AP of any resample of the images (area "all", 20 detections):
    ``image_id``, ``scores`` (the image's kept detections by descending score), ``matched`` and ``ignored``
    (0/1, one row per OKS threshold, one column per detection) and ``positives`` (non-ignored ground truths)."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        raise MimlensError("no keypoint prediction to evaluate")
    sigmas = keypoint_sigmas(coco_gt) if sigmas is None else np.asarray(sigmas, dtype=np.float64)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = sigmas
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {name: float(v) for name, v in zip(AP_NAMES, evaluator.stats, strict=True)}
    return metrics, image_records(evaluator, sorted(coco_gt.getImgIds()), evaluator.params.catIds[0])


def image_records(evaluator, image_ids: list[int], category_id: int) -> list[dict]:
    """One record per image of an evaluated ``COCOeval`` (area "all", its largest maxDets) for one category:
    ``image_id``, ``scores`` (the image's kept detections by descending score), ``matched`` and ``ignored``
    (0/1, one row per threshold, one column per detection) and ``positives`` (non-ignored ground truths)."""
    params, thresholds = evaluator.params, len(evaluator.params.iouThrs)
    found = {e["image_id"]: e for e in evaluator.evalImgs
             if e is not None and e["aRng"] == params.areaRng[0] and e["category_id"] == category_id}
    records = []
    for image_id in image_ids:
        e, keep = found.get(image_id), params.maxDets[-1]
        if e is None:
            records.append({"image_id": int(image_id), "scores": [], "matched": [[]] * thresholds,
                            "ignored": [[]] * thresholds, "positives": 0})
            continue
        records.append({"image_id": int(image_id), "scores": [float(v) for v in e["dtScores"][:keep]],
                        "matched": (e["dtMatches"][:, :keep] > 0).astype(int).tolist(),
                        "ignored": e["dtIgnore"][:, :keep].astype(int).tolist(),
                        "positives": int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))})
    return records


def keypoint_ap(records: list[dict]) -> float:
    """COCO keypoint AP (OKS 0.50:0.95, area "all", 20 detections) of :func:`coco_keypoint_eval_images`
    records, as ``COCOeval.accumulate`` computes it: detections of all images ranked by score (stable), the
    precision made monotone and read at the 101 recall points 0, 0.01, ..., 1 (0 beyond the reached recall),
    averaged over recall points and thresholds; -1 when no ground truth counts."""
    positives = sum(r["positives"] for r in records)
    if positives == 0:
        return -1.0
    scores = np.concatenate([np.asarray(r["scores"], dtype=np.float64) for r in records])
    order = np.argsort(-scores, kind="mergesort")
    thresholds = len(records[0]["matched"])
    recall_points = np.linspace(0.0, 1.0, 101)
    total = 0.0
    for t in range(thresholds):
        matched = np.concatenate([np.asarray(r["matched"][t], dtype=bool) for r in records])[order]
        ignored = np.concatenate([np.asarray(r["ignored"][t], dtype=bool) for r in records])[order]
        tp = np.cumsum(matched & ~ignored).astype(np.float64)
        fp = np.cumsum(~matched & ~ignored).astype(np.float64)
        if tp.size == 0:
            continue
        precision = np.maximum.accumulate((tp / (tp + fp + np.spacing(1)))[::-1])[::-1]
        at = np.searchsorted(tp / positives, recall_points, side="left")
        total += np.where(at < tp.size, precision[np.minimum(at, tp.size - 1)], 0.0).mean()
    return float(total / thresholds)


def _interpolated(recall: np.ndarray, precision: np.ndarray, recall_points: np.ndarray) -> np.ndarray:
    """Per row of (rows, D) monotone ``recall`` and its ``precision``: the mean over ``recall_points`` of the
    precision at the first detection whose recall reaches the point (0 where none does), as
    ``np.searchsorted(recall_row, recall_points, side="left")`` finds it, for all rows at once: the number of a
    row's recalls below point j is the number of its detections whose first recall point above them is <= j."""
    rows, detections = recall.shape
    first = np.searchsorted(recall_points, recall, side="right")  # (rows, D)
    width = len(recall_points) + 1
    below = np.bincount((first + np.arange(rows)[:, None] * width).ravel(), minlength=rows * width)
    at = np.cumsum(below.reshape(rows, width), axis=1)[:, :len(recall_points)]  # (rows, points)
    picked = np.take_along_axis(precision, np.minimum(at, detections - 1), axis=1)
    return np.where(at < detections, picked, 0.0).mean(axis=1)


def keypoint_ap_resampled(records: list[dict], counts: np.ndarray, chunk: int = 64) -> np.ndarray:
    """:func:`keypoint_ap` of many resamples of the images at once: ``counts`` (R, n) says how often each of the
    n records is drawn in each of R resamples; returns (R,) APs.

    A resample holds each image's detections ``count`` times. This equals :func:`keypoint_ap` of the resampled
    records listed in data-set order (``sorted(draw)``): copies of a detection are adjacent in the ranking, and
    a run of true positives of equal score reaches the same monotone precision at its end as at any point
    inside it, so weighting each detection by its count gives the same precision at every recall point. (Only
    equal scores of different detections of one image may rank in another order; real scores are floats.)
    """
    counts = np.asarray(counts, dtype=np.float64)
    per_image = [len(r["scores"]) for r in records]
    image = np.repeat(np.arange(len(records)), per_image)
    if image.size == 0:
        return np.where(counts @ np.array([r["positives"] for r in records], dtype=np.float64) > 0, 0.0, -1.0)
    scores = np.concatenate([np.asarray(r["scores"], dtype=np.float64) for r in records if r["scores"]])
    order = np.argsort(-scores, kind="mergesort")
    image = image[order]
    thresholds = len(records[0]["matched"])
    stack = [np.concatenate([np.asarray(r["matched"][t], dtype=bool) for r in records if r["scores"]])[order]
             for t in range(thresholds)]
    ignored = [np.concatenate([np.asarray(r["ignored"][t], dtype=bool) for r in records if r["scores"]])[order]
               for t in range(thresholds)]
    true_pos = np.stack([m & ~i for m, i in zip(stack, ignored, strict=True)]).astype(np.float64)  # (T, D)
    false_pos = np.stack([~m & ~i for m, i in zip(stack, ignored, strict=True)]).astype(np.float64)
    positives = counts @ np.array([r["positives"] for r in records], dtype=np.float64)  # (R,)
    recall_points = np.linspace(0.0, 1.0, 101)
    out = np.empty(counts.shape[0])
    for start in range(0, counts.shape[0], chunk):
        w = counts[start:start + chunk, image]  # (r, D): each detection's multiplicity
        tp = np.cumsum(w[:, None, :] * true_pos[None], axis=2)  # (r, T, D)
        fp = np.cumsum(w[:, None, :] * false_pos[None], axis=2)
        precision = np.flip(np.maximum.accumulate(np.flip(tp / (tp + fp + np.spacing(1)), 2), axis=2), 2)
        pos = positives[start:start + chunk, None, None]
        recall = np.divide(tp, pos, out=np.zeros_like(tp), where=pos > 0)
        ap = _interpolated(recall.reshape(-1, tp.shape[2]), precision.reshape(-1, tp.shape[2]), recall_points)
        ap = ap.reshape(tp.shape[:2])
        out[start:start + chunk] = np.where(positives[start:start + chunk] > 0, ap.mean(axis=1), -1.0)
    return out


# ---------------------------------------------------------------------------------------------- targets


def person_crop(bbox: list[float] | tuple[float, ...], aspect: float, padding: float = BOX_PADDING
                ) -> tuple[float, float, float, float]:
    """The crop (x0, y0, w, h) for a COCO box (x, y, w, h): same centre, grown to ``aspect`` = w / h, scaled
    by ``padding``."""
    x, y, w, h = (float(v) for v in bbox)
    cx, cy = x + w / 2, y + h / 2
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    w, h = w * padding, h * padding
    return cx - w / 2, cy - h / 2, w, h


def to_heatmap(points: torch.Tensor, box: tuple[float, ...], size: tuple[int, int]) -> torch.Tensor:
    """Image coordinates (…, 2) → heatmap index coordinates (pixel j's centre is j) of the crop ``box``."""
    x0, y0, w, h = box
    scale = points.new_tensor([size[1] / w, size[0] / h])
    return (points - points.new_tensor([x0, y0])) * scale - 0.5


def from_heatmap(coords: torch.Tensor, box: tuple[float, ...], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`to_heatmap`."""
    x0, y0, w, h = box
    scale = coords.new_tensor([w / size[1], h / size[0]])
    return (coords + 0.5) * scale + coords.new_tensor([x0, y0])


def gaussian_heatmaps(coords: torch.Tensor, weight: torch.Tensor, size: tuple[int, int], sigma: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, H, W) Gaussian targets at heatmap coordinates ``coords`` (K, 2); weights drop keypoints whose
    centre lies outside the heatmap."""
    inside = (coords[:, 0] >= -0.5) & (coords[:, 0] < size[1] - 0.5) & (coords[:, 1] >= -0.5) & (
        coords[:, 1] < size[0] - 0.5)
    weight = weight * inside.to(weight.dtype)
    ys = torch.arange(size[0], dtype=coords.dtype)[None, :, None]
    xs = torch.arange(size[1], dtype=coords.dtype)[None, None, :]
    d2 = (xs - coords[:, 0, None, None]) ** 2 + (ys - coords[:, 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma**2)) * weight[:, None, None], weight


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over (B, K, H, W) of weight_k · (pred − target)²."""
    return ((pred - target) ** 2 * weight[..., None, None]).mean()


def decode_heatmaps(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, H, W) → heatmap coordinates (B, K, 2) and maxima (B, K), as HRNet's ``get_final_preds``.

    The argmax (first one on ties; pixel (0, 0) where the maximum is <= 0), plus 0.25 · sign(right − left)
    in x and 0.25 · sign(below − above) in y, both only when 1 < x < W − 1 and 1 < y < H − 1.
    """
    b, k, h, w = heatmaps.shape
    maxvals, index = heatmaps.flatten(2).max(dim=2)
    index = torch.where(maxvals > 0, index, torch.zeros_like(index))
    col, row = (index % w).flatten(), (index // w).flatten()
    hm, n = heatmaps.reshape(b * k, h, w), torch.arange(b * k)
    dx = hm[n, row, (col + 1).clamp(max=w - 1)] - hm[n, row, (col - 1).clamp(min=0)]
    dy = hm[n, (row + 1).clamp(max=h - 1), col] - hm[n, (row - 1).clamp(min=0), col]
    inner = (col > 1) & (col < w - 1) & (row > 1) & (row < h - 1)
    shift = torch.stack([dx.sign(), dy.sign()], dim=1) * 0.25 * inner[:, None].to(heatmaps.dtype)
    coords = torch.stack([col, row], dim=1).to(heatmaps.dtype) + shift
    return coords.view(b, k, 2), maxvals


def has_labelled_keypoints(ann: dict) -> bool:
    """Whether a COCO annotation labels a keypoint (some v > 0): HRNet's ``max(keypoints) != 0`` on COCO files,
    where unlabelled keypoints are (0, 0, 0), and COCOeval's test for a ground truth it does not ignore."""
    keypoints = ann.get("keypoints") or []
    return any(v > 0 for v in keypoints[2::3])


def flip_heatmaps(heatmaps: torch.Tensor, flip_pairs: list[tuple[int, int]]) -> torch.Tensor:
    """Heatmaps of a horizontally flipped crop, mapped back: mirror the width and swap left/right keypoints."""
    out = heatmaps.flip(-1)
    order = list(range(heatmaps.shape[1]))
    for a, b in flip_pairs:
        order[a], order[b] = b, a
    return out[:, order]


# ---------------------------------------------------------------------------------------------- model


class HeatmapHead(nn.Module):
    """Two deconvolutions (4×4, stride 2, + BN + ReLU) and a 1×1 conv to one heatmap per keypoint."""

    def __init__(self, in_channels: int, num_keypoints: int, channels: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(2):
            layers += [nn.ConvTranspose2d(in_channels if i == 0 else channels, channels, 4, stride=2, padding=1,
                                          bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(channels, num_keypoints, 1)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.final(self.deconv(fmap))


class PoseModel(nn.Module):
    """Backbone (``encoder``) + :class:`HeatmapHead` on its last feature map; heatmaps are 4× the feature grid."""

    def __init__(self, encoder: nn.Module, num_keypoints: int, image_size: tuple[int, int], channels: int = 64
                 ) -> None:
        super().__init__()
        self.encoder = encoder
        c, h, w = feature_shape(encoder, image_size)
        self.heatmap_size = (4 * h, 4 * w)
        self.head = HeatmapHead(c, num_keypoints, channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(feature_map(self.encoder, images))


# ---------------------------------------------------------------------------------------------- data


class CocoKeypointCrops(torch.utils.data.Dataset):
    """Top-down crops of the non-crowd person boxes of a COCO keypoint file, with heatmap targets.

    Boxes with positive size are kept; with ``require_keypoints`` (the default, HRNet's protocol for training
    and evaluation) only those with a labelled keypoint (:func:`has_labelled_keypoints`), the others counted
    in ``skipped_no_keypoints``. Images are read from ``image_dir / file_name``, or by ``load(image_info)``
    when given; crops are float RGB in [0, 1].
    """

    def __init__(self, coco, image_dir: str | Path | None, input_size: tuple[int, int],
                 heatmap_size: tuple[int, int], sigma: float = 2.0, require_keypoints: bool = True,
                 load: Callable[[dict], torch.Tensor] | None = None) -> None:
        self.coco = coco
        ann_file = coco.dataset.get("source", "the COCO keypoint file")
        self.load = load or (lambda info: load_image(Path(image_dir) / info["file_name"]))
        self.input_size, self.heatmap_size, self.sigma = tuple(input_size), tuple(heatmap_size), sigma
        cats = self.coco.loadCats(self.coco.getCatIds())
        if not cats or not cats[0].get("keypoints"):
            raise MimlensError(f"{ann_file}: no category with a 'keypoints' list")
        self.num_keypoints = len(cats[0]["keypoints"])
        self.keypoint_names = list(cats[0]["keypoints"])
        boxes = [a for a in self.coco.loadAnns(self.coco.getAnnIds(iscrowd=False))
                 if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        kept = [a for a in boxes if has_labelled_keypoints(a) or not require_keypoints]
        self.skipped_no_keypoints = len(boxes) - len(kept)
        if not kept:
            raise MimlensError(f"{ann_file}: no person box to crop")
        # per-item records as arrays (no Python object per crop for DataLoader workers to touch)
        self.ann_ids = np.array([a["id"] for a in kept], dtype=np.int64)
        self.image_ids = np.array([a["image_id"] for a in kept], dtype=np.int64)
        self.category_ids = np.array([a["category_id"] for a in kept], dtype=np.int64)
        self.boxes = np.array([a["bbox"] for a in kept], dtype=np.float64)
        self.keypoints = np.array([a.get("keypoints") or [0.0] * 3 * self.num_keypoints for a in kept],
                                  dtype=np.float64).reshape(len(kept), self.num_keypoints, 3)

    @property
    def annotations(self) -> list[dict]:
        """The COCO annotation of each crop, in order."""
        return [self.coco.anns[int(i)] for i in self.ann_ids]

    def flip_pairs(self) -> list[tuple[int, int]]:
        """Left/right keypoint pairs found by name (``left_eye`` ↔ ``right_eye``, ``left`` ↔ ``right``)."""
        names = self.keypoint_names
        return [(i, names.index(n.replace("left", "right"))) for i, n in enumerate(names)
                if "left" in n and n.replace("left", "right") in names]

    def __len__(self) -> int:
        return len(self.ann_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        info = self.coco.imgs[int(self.image_ids[index])]
        image = self.load(info)
        box = person_crop(self.boxes[index].tolist(), self.input_size[1] / self.input_size[0])
        keypoints = torch.from_numpy(self.keypoints[index].copy())
        coords = to_heatmap(keypoints[:, :2], box, self.heatmap_size)
        target, weight = gaussian_heatmaps(coords, (keypoints[:, 2] > 0).double(), self.heatmap_size, self.sigma)
        return {
            "image": crop(image, box, self.input_size),
            "target": target.float(),
            "weight": weight.float(),
            "box": torch.tensor(box, dtype=torch.float64),
            "image_id": torch.tensor(self.image_ids[index]),
            "category_id": torch.tensor(self.category_ids[index]),
        }


def keypoint_results(heatmaps: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[dict]:
    """COCO keypoint results of a batch of heatmaps from :class:`CocoKeypointCrops` crops."""
    coords, maxvals = decode_heatmaps(heatmaps.detach().double().cpu())
    size = tuple(heatmaps.shape[-2:])
    results = []
    for i in range(coords.shape[0]):
        box = tuple(batch["box"][i].tolist())
        xy = from_heatmap(coords[i], box, size)
        scores = maxvals[i]
        confident = scores[scores > SCORE_THRESHOLD]
        keypoints = torch.cat([xy, scores[:, None]], dim=1).flatten().tolist()
        results.append({
            "image_id": int(batch["image_id"][i]),
            "category_id": int(batch["category_id"][i]),
            "keypoints": keypoints,
            "score": float(confident.mean()) if confident.numel() else 0.0,
        })
    return results


@torch.no_grad()
def predict(model: PoseModel, loader, flip_pairs: list[tuple[int, int]] | None = None) -> list[dict]:
    """COCO results for every crop of ``loader``; with ``flip_pairs`` the heatmaps of the flipped crop are
    averaged in (flip test)."""
    model.eval()
    device = next(model.parameters()).device
    results = []
    for batch in loader:
        images = batch["image"].to(device)
        heatmaps = model(images)
        if flip_pairs is not None:
            heatmaps = (heatmaps + flip_heatmaps(model(images.flip(-1)), flip_pairs)) / 2
        results += keypoint_results(heatmaps, batch)
    return results
