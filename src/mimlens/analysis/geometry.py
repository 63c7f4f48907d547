"""Where tokens sit in the input image: token centres, pairwise distances, Swin window layouts.

Convention: the token in row r, column c of a grid with stride s = (s_h, s_w) pixels has its
centre at p = (s_h·(r + ½), s_w·(c + ½)) in input pixels, rows first. Grids may be non-square; nothing
here assumes a token count.

Swin windows follow timm 1.0's order of operations in a block: the (h, w) map is rolled by −shift,
padded with zero tokens at the bottom and right up to a multiple of the window, and cut into windows in
raster order. ``window_token_index`` undoes that, so every window slot is tied to the map token it holds
(or to padding), and distances between slots are true distances on the map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

__all__ = ["WindowLayout", "padded_size", "pairwise_distance", "token_centres", "window_layout", "window_token_index"]


def token_centres(grid: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Centres of the tokens of a (h, w) grid in input pixels, shape (h·w, 2), rows (y, x) in raster order.

    Args:
        grid: token grid (rows, columns).
        stride: token stride in pixels (along rows, along columns).
    """
    (h, w), (s_h, s_w) = grid, stride
    rows = (torch.arange(h, dtype=torch.float64) + 0.5) * s_h
    cols = (torch.arange(w, dtype=torch.float64) + 0.5) * s_w
    y, x = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([y.reshape(-1), x.reshape(-1)], dim=1)


@lru_cache(maxsize=32)
def _pairwise_distance(grid: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    return torch.cdist(token_centres(grid, stride), token_centres(grid, stride))


def pairwise_distance(grid: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Euclidean distance in pixels between every pair of token centres, (h·w, h·w) float64, cached per grid.

    The returned tensor is shared by all callers of the same grid and stride: do not modify it in place.
    """
    return _pairwise_distance(tuple(grid), tuple(stride))


def padded_size(grid: tuple[int, int], window: tuple[int, int]) -> tuple[int, int]:
    """The map size after timm pads it to a multiple of the window."""
    return tuple(math.ceil(g / ws) * ws for g, ws in zip(grid, window, strict=True))


def window_token_index(grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """For every slot of every window, the raster index of the map token it holds, or −1 for padding.

    Shape (num_windows, window_h·window_w), windows and slots in timm's raster order. A padded-map position
    (i, j) inside the original (h, w) extent holds the token ((i + shift_h) mod h, (j + shift_w) mod w),
    because the map was rolled by −shift before it was padded.
    """
    (h, w), (ws_h, ws_w), (sh_h, sh_w) = grid, window, shift
    hp, wp = padded_size(grid, window)
    i = torch.arange(hp).view(-1, 1).expand(hp, wp)
    j = torch.arange(wp).view(1, -1).expand(hp, wp)
    index = ((i + sh_h) % h) * w + (j + sh_w) % w
    index = torch.where((i < h) & (j < w), index, torch.full_like(index, -1))
    windows = index.view(hp // ws_h, ws_h, wp // ws_w, ws_w).permute(0, 2, 1, 3)
    return windows.reshape(-1, ws_h * ws_w)


@dataclass(frozen=True)
class WindowLayout:
    """Geometry of one windowed-attention call: which slots hold real tokens and how far apart they are.

    Attributes:
        token_index: (num_windows, N) raster index of the map token in each slot, −1 for padding.
        is_token: (num_windows, N) bool, True where the slot holds a map token (not padding).
        distance: (num_windows, N, N) float64 pixel distance between the map tokens in two slots; 0 where
            either slot is padding.
    """

    token_index: torch.Tensor
    is_token: torch.Tensor
    distance: torch.Tensor


@lru_cache(maxsize=64)
def _window_layout(grid, window, shift, stride) -> WindowLayout:
    index = window_token_index(grid, window, shift)
    is_token = index >= 0
    centres = token_centres(grid, stride)[index.clamp_min(0)]
    distance = torch.cdist(centres, centres)
    both = is_token.unsqueeze(2) & is_token.unsqueeze(1)
    return WindowLayout(index, is_token, torch.where(both, distance, torch.zeros_like(distance)))


def window_layout(
    grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int], stride: tuple[int, int]
) -> WindowLayout:
    """The window layout of a Swin block on a (h, w) map of the given stride, cached per geometry.

    Distances are between true map positions. For every pair the shift mask allows they equal in-window
    distances, except where timm's roll-before-pad order puts both sides of the wrap seam in one mask
    region (a shifted block on a map the window does not divide); there the true distance is kept.
    """
    return _window_layout(tuple(grid), tuple(window), tuple(shift), tuple(stride))
