"""Training-free tracking by feature correlation on one block's patch tokens (a frozen-feature probe).

Per block and sequence: the search region is the square of side ``search_factor`` · sqrt(w·h) of the
first ground-truth box (as :func:`mimlens.tasks.tracking.crop_side`), resampled to the model's input size
with :func:`mimlens.tasks.tracking.crop_square`. The template is the mean feature of the tokens whose
centres lie inside the first box in the search crop of frame 0 (the token holding the box centre when no
centre does). In every later frame the crop is centred on the block's previous prediction; the centre is
the soft-argmax of the cosine similarity between each token and the template, softmax(sim / τ) with
τ = :data:`TEMPERATURE`, over token centres; the box keeps the first frame's width and height (the
reported box is clipped to the frame, the carried state is not). The first frame reports its ground truth,
as in :func:`mimlens.tasks.tracking.track_sequence`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mimlens.tasks.images import normalize
from mimlens.tasks.tracking import TrackingSequence, crop_side, crop_square

TEMPERATURE = 0.05  # in units of cosine similarity

BlockMaps = Callable[[torch.Tensor], dict[int, torch.Tensor]]  # images (B, 3, S, S) -> {block: (B, h, w, C)}


def token_centres(grid: tuple[int, int], size: int) -> torch.Tensor:
    """(h·w, 2) centres (x, y) in pixels of the tokens of an ``size``-pixel square input, raster order."""
    h, w = grid
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) * size / h
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) * size / w
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


def template_feature(fmap: torch.Tensor, box: tuple[float, float, float, float], size: int) -> torch.Tensor:
    """Mean feature of the tokens of ``fmap`` (h, w, C) whose centres lie inside ``box`` (x, y, w, h) in crop
    pixels; the token nearest to the box centre when no centre lies inside."""
    centres = token_centres(fmap.shape[:2], size).to(fmap.device)
    x, y, w, h = box
    inside = ((centres[:, 0] >= x) & (centres[:, 0] < x + w) & (centres[:, 1] >= y) & (centres[:, 1] < y + h))
    if not bool(inside.any()):
        nearest = (centres - centres.new_tensor([x + w / 2, y + h / 2])).norm(dim=1).argmin()
        inside[nearest] = True
    return fmap.flatten(0, 1)[inside].double().mean(0)


def soft_argmax_centre(fmap: torch.Tensor, template: torch.Tensor, size: int,
                       temperature: float = TEMPERATURE) -> torch.Tensor:
    """(x, y) in crop pixels: the softmax(cosine similarity / τ)-weighted mean of the token centres."""
    tokens = fmap.flatten(0, 1).double()
    weights = torch.softmax(F.cosine_similarity(tokens, template[None], dim=1) / temperature, dim=0)
    return weights @ token_centres(fmap.shape[:2], size).to(fmap.device)


def _clipped(cx: float, cy: float, w: float, h: float, width: int, height: int) -> list[float]:
    x0, y0 = min(max(cx - w / 2, 0.0), width - 1.0), min(max(cy - h / 2, 0.0), height - 1.0)
    x1, y1 = min(max(cx + w / 2, x0 + 1.0), float(width)), min(max(cy + h / 2, y0 + 1.0), float(height))
    return [x0, y0, x1 - x0, y1 - y0]


@torch.no_grad()
def track_by_correlation(block_maps: BlockMaps, seq: TrackingSequence, blocks: list[int], size: int,
                         mean: tuple[float, ...], std: tuple[float, ...], search_factor: float = 4.0,
                         temperature: float = TEMPERATURE, device: torch.device | str = "cpu"
                         ) -> dict[int, torch.Tensor]:
    """(T, 4) predicted boxes (x, y, w, h) per block for one sequence; one forward of ``len(blocks)`` crops
    per frame (crop ``i`` is centred on block ``blocks[i]``'s previous prediction)."""
    x0, y0, w, h = (float(v) for v in seq.boxes[0])
    side = crop_side(seq.boxes[0], search_factor)
    centre = (x0 + w / 2, y0 + h / 2)
    first = normalize(crop_square(seq.frame(0), centre, side, size), mean, std)[None].to(device)
    maps = block_maps(first)
    box_in_crop = ((x0 - centre[0] + side / 2) * size / side, (y0 - centre[1] + side / 2) * size / side,
                   w * size / side, h * size / side)
    templates = {b: template_feature(maps[b][0], box_in_crop, size) for b in blocks}
    centres = {b: centre for b in blocks}
    boxes = {b: [[x0, y0, w, h]] for b in blocks}
    for index in range(1, len(seq.boxes)):
        image = seq.frame(index)
        crops = torch.stack([normalize(crop_square(image, centres[b], side, size), mean, std) for b in blocks])
        maps = block_maps(crops.to(device))
        for i, b in enumerate(blocks):
            local = soft_argmax_centre(maps[b][i], templates[b], size, temperature).cpu()
            cx = centres[b][0] - side / 2 + float(local[0]) * side / size
            cy = centres[b][1] - side / 2 + float(local[1]) * side / size
            centres[b] = (cx, cy)
            boxes[b].append(_clipped(cx, cy, w, h, image.shape[-1], image.shape[-2]))
    return {b: torch.tensor(boxes[b], dtype=torch.float64) for b in blocks}
