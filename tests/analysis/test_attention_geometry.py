"""Token geometry: centres, pairwise distances, Swin window layouts against brute force."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import window_partition

from mimlens.analysis.geometry import padded_size, pairwise_distance, token_centres, window_layout, window_token_index


def test_token_centres_non_square_grid_and_stride():
    centres = token_centres((2, 3), (8, 4))
    expected = [[8 * (r + 0.5), 4 * (c + 0.5)] for r in range(2) for c in range(3)]
    assert centres.tolist() == expected


def test_pairwise_distance_matches_loops():
    grid, stride = (3, 4), (16, 16)
    d = pairwise_distance(grid, stride)
    cells = list(itertools.product(range(3), range(4)))
    for (i, (r1, c1)), (j, (r2, c2)) in itertools.product(enumerate(cells), repeat=2):
        assert d[i, j].item() == pytest.approx(16 * math.hypot(r1 - r2, c1 - c2), abs=1e-12)


def timm_slot_tokens(grid, window, shift):
    """Which map token each window slot holds, by running timm's own roll, pad and partition on indices."""
    h, w = grid
    index = torch.arange(h * w, dtype=torch.float64).view(1, h, w, 1)
    if any(shift):
        index = torch.roll(index, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    hp, wp = padded_size(grid, window)
    index = F.pad(index, (0, 0, 0, wp - w, 0, hp - h), value=-1)
    return window_partition(index, window).reshape(-1, window[0] * window[1]).long()


@pytest.mark.parametrize(
    "grid, window, shift",
    [((8, 8), (4, 4), (0, 0)), ((8, 8), (4, 4), (2, 2)), ((9, 7), (4, 4), (2, 2)), ((5, 4), (4, 4), (2, 0))],
)
def test_window_token_index_undoes_roll_pad_and_partition(grid, window, shift):
    assert torch.equal(window_token_index(grid, window, shift), timm_slot_tokens(grid, window, shift))


def test_window_distances_are_true_map_distances():
    grid, window, shift, stride = (9, 7), (4, 4), (2, 2), (8, 8)
    layout = window_layout(grid, window, shift, stride)
    full = pairwise_distance(grid, stride)
    index = layout.token_index
    for w in range(index.shape[0]):
        for a, b in itertools.product(range(16), repeat=2):
            i, j = index[w, a].item(), index[w, b].item()
            expected = full[i, j].item() if i >= 0 and j >= 0 else 0.0
            assert layout.distance[w, a, b].item() == pytest.approx(expected, abs=1e-12)
    assert torch.equal(layout.is_token, index >= 0)


def test_in_window_distance_equals_map_distance_without_padding():
    grid, window, shift, stride = (8, 8), (4, 4), (2, 2), (4, 4)
    layout = window_layout(grid, window, shift, stride)
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    slot = torch.stack([rows.reshape(-1), cols.reshape(-1)], 1).double() * 4
    in_window = torch.cdist(slot, slot)
    index = layout.token_index
    region = region_of_rolled_position(grid, window, shift)
    same_region = region.unsqueeze(2) == region.unsqueeze(1)
    assert torch.allclose(layout.distance[same_region], in_window.expand_as(layout.distance)[same_region])
    assert (index >= 0).all()


def region_of_rolled_position(grid, window, shift):
    """timm's shift-mask region label of every window slot (the ``img_mask`` of ``get_attn_mask``)."""
    hp, wp = padded_size(grid, window)
    label = torch.zeros(hp, wp, dtype=torch.long)
    bands_h = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
    bands_w = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
    for n, (bh, bw) in enumerate(itertools.product(bands_h, bands_w)):
        label[bh[0] : bh[1], bw[0] : bw[1]] = n
    return window_partition(label.view(1, hp, wp, 1), window).reshape(-1, window[0] * window[1])


def test_timm_roll_before_pad_joins_the_wrap_seam_in_one_region():
    """On a 9-row map with 4-row windows, timm's mask lets map rows 8 and 0 attend to each other.

    This is why distances are taken between true map positions: the in-window distance of such a pair is
    one row, the true distance eight.
    """
    grid, window, shift, stride = (9, 9), (4, 4), (2, 2), (1, 1)
    layout = window_layout(grid, window, shift, stride)
    region = region_of_rolled_position(grid, window, shift)
    allowed = (region.unsqueeze(2) == region.unsqueeze(1)) & layout.is_token.unsqueeze(1) & layout.is_token.unsqueeze(2)
    row = torch.where(layout.token_index >= 0, layout.token_index // 9, -1)
    seam = allowed & (row.unsqueeze(2) == 8) & (row.unsqueeze(1) == 0)
    assert seam.any()
    assert layout.distance[seam].min().item() >= 8.0
