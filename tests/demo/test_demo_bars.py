"""Fill baselines of the SimMIM training bar against loop references."""

import numpy as np
import pytest
import torch

from mimlens.demo.bars import masked_l1_mean, mean_fill, nearest_fill, pixel_mask


def nearest_sources(masked: np.ndarray) -> dict[tuple[int, int], set[tuple[int, int]]]:
    """For every masked pixel, the visible pixels at the smallest Euclidean distance (brute force)."""
    visible = [tuple(p) for p in np.argwhere(~masked)]
    out = {}
    for r, c in np.argwhere(masked):
        d = {v: (v[0] - r) ** 2 + (v[1] - c) ** 2 for v in visible}
        best = min(d.values())
        out[(int(r), int(c))] = {v for v, dv in d.items() if dv == best}
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nearest_fill_takes_a_nearest_visible_pixel(seed):
    gen = torch.Generator().manual_seed(seed)
    masks = torch.rand(2, 9, 11, generator=gen) < 0.6
    # every pixel value unique, so the source pixel of each fill can be identified
    images = torch.arange(2 * 3 * 9 * 11, dtype=torch.float64).reshape(2, 3, 9, 11)
    filled = nearest_fill(images, masks)
    for b in range(2):
        sources = nearest_sources(masks[b].numpy())
        for (r, c), candidates in sources.items():
            got = filled[b, :, r, c]
            assert any(torch.equal(got, images[b, :, vr, vc]) for vr, vc in candidates)
        assert torch.equal(filled[b][:, ~masks[b]], images[b][:, ~masks[b]])


def test_nearest_fill_known_answer_and_all_masked_image():
    image = torch.tensor([[[1.0, 0.0, 0.0, 2.0]]])  # one row: visible at both ends
    mask = torch.tensor([[[False, True, True, False]]])
    assert nearest_fill(image[None], mask)[0].tolist() == [[[1.0, 1.0, 2.0, 2.0]]]
    all_masked = torch.ones(1, 1, 4, dtype=torch.bool)
    assert torch.equal(nearest_fill(image[None], all_masked), image[None])


def test_mean_fill_is_the_visible_mean_per_channel():
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 5, 5, generator=gen)
    masks = torch.rand(2, 5, 5, generator=gen) < 0.5
    filled = mean_fill(images, masks)
    for b in range(2):
        for ch in range(3):
            mean = images[b, ch][~masks[b]].mean()
            assert torch.allclose(filled[b, ch][masks[b]], mean.expand(int(masks[b].sum())))
            assert torch.equal(filled[b, ch][~masks[b]], images[b, ch][~masks[b]])


def test_masked_l1_counts_masked_pixels_only():
    target = torch.zeros(1, 3, 2, 2)
    prediction = torch.tensor([[[[1.0, 5.0], [2.0, 7.0]]]]).expand(1, 3, 2, 2)
    mask = torch.tensor([[[True, False], [True, False]]])
    assert masked_l1_mean(prediction, target, mask) == pytest.approx(1.5)


def test_pixel_mask_upsamples_tokens():
    tokens = torch.tensor([[[True, False], [False, True]]])
    pixels = pixel_mask(tokens, 4)
    assert pixels.shape == (1, 4, 4)
    assert pixels[0, :2, :2].all() and not pixels[0, :2, 2:].any() and pixels[0, 2:, 2:].all()
