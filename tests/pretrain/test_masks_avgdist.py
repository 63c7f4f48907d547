import math

import numpy as np
import pytest
import torch

from mimlens.errors import MimlensError
from mimlens.pretrain.masking import (
    avg_dist,
    avg_dist_sweep,
    masked_distance,
    random_block_mask,
    random_block_masks,
)


@pytest.mark.parametrize(
    ("img_size", "mask_patch", "ratio"),
    [(224, 32, 0.6), (192, 32, 0.6), (64, 16, 0.5), (64, 8, 0.75), (32, 8, 0.1), (32, 8, 0.0), (32, 8, 1.0)],
)
def test_exact_number_of_masked_blocks(img_size, mask_patch, ratio):
    blocks = (img_size // mask_patch) ** 2
    masks = random_block_masks(16, img_size, mask_patch, mask_patch, ratio, torch.Generator().manual_seed(1))
    assert masks.shape == (16, img_size // mask_patch, img_size // mask_patch)
    assert masks.dtype == torch.bool
    assert (masks.flatten(1).sum(1) == math.ceil(ratio * blocks)).all()


def test_masked_blocks_are_chosen_uniformly():
    # 4 blocks, 1 masked: each block should be masked in about a quarter of many masks.
    masks = random_block_masks(4000, 32, 16, 16, 0.25, torch.Generator().manual_seed(0))
    freq = masks.float().mean(0)
    assert torch.allclose(freq, torch.full((2, 2), 0.25), atol=0.03)


def test_upsampling_to_the_token_grid_repeats_each_block():
    mask = random_block_mask(64, 32, 8, 0.5, torch.Generator().manual_seed(3))
    assert mask.shape == (8, 8)
    blocks = mask.view(2, 4, 2, 4)  # (block row, token row in block, block col, token col in block)
    assert (blocks == blocks[:, :1, :, :1]).all(), "every 4x4 group of tokens must share its block's value"
    assert int(mask.sum()) == 2 * 16


def test_rectangular_image():
    mask = random_block_mask((64, 96), 32, 16, 0.5)
    assert mask.shape == (4, 6)
    assert int(mask.sum()) == 3 * 4


def test_generator_makes_masks_reproducible():
    first = random_block_masks(4, 64, 16, 8, 0.6, torch.Generator().manual_seed(7))
    second = random_block_masks(4, 64, 16, 8, 0.6, torch.Generator().manual_seed(7))
    assert torch.equal(first, second)
    assert not torch.equal(first[0], first[1]) or not torch.equal(first[1], first[2])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((224, 64, 16, 0.6), "not divisible by mask_patch_size 64"),
        ((64, 16, 12, 0.6), "not a multiple of model_patch_size 12"),
        ((64, 16, 8, 1.5), "mask ratio"),
        ((64, 0, 8, 0.5), "must be positive"),
    ],
)
def test_bad_sizes_raise(args, words):
    with pytest.raises(MimlensError, match=words):
        random_block_mask(*args)


def _brute_force_distance(masks: np.ndarray) -> float:
    """Loop over every masked pixel and every visible pixel of the same mask: pixel-centre distances."""
    total, count = 0.0, 0
    for mask in masks:
        visible = np.argwhere(~mask)
        for r, c in np.argwhere(mask):
            total += np.sqrt(((visible - (r, c)) ** 2).sum(1)).min()
            count += 1
    return total / count


def test_masked_distance_known_answers():
    one = np.zeros((5, 5), bool)
    one[2, 2] = True
    assert masked_distance(one) == pytest.approx(1.0)
    block = np.zeros((7, 7), bool)
    block[2:5, 2:5] = True  # 8 pixels next to a visible one, the centre 2 away
    assert masked_distance(block) == pytest.approx(10 / 9)
    corner = np.zeros((4, 4), bool)
    corner[:3, :3] = True  # outside the image is not visible: pixel (r, c) is min(3 - r, 3 - c) from row/col 3
    assert masked_distance(corner) == pytest.approx(14 / 9)
    assert masked_distance(np.zeros((4, 4), bool)) == 0.0


def test_masked_distance_matches_brute_force_on_random_masks():
    rng = np.random.default_rng(0)
    masks = rng.random((6, 12, 10)) < 0.7
    masks[:, 0, 0] = False  # at least one visible pixel per mask
    assert masked_distance(masks) == pytest.approx(_brute_force_distance(masks), rel=1e-12)


def test_avg_dist_matches_brute_force_on_small_simmim_masks():
    masks = random_block_masks(5, 24, 4, 1, 0.7, torch.Generator().manual_seed(0)).numpy()
    expected = _brute_force_distance(masks)
    assert masked_distance(masks) == pytest.approx(expected, rel=1e-12)
    assert avg_dist(24, 4, 0.7, num_masks=5, seed=0) == pytest.approx(expected, rel=1e-12)


def test_avg_dist_reference_value_224_32_06():
    # SimMIM's 224 px, mask patch 32, ratio 0.6: about 15.0 px (mean of 100-200 masks; 15.0-15.1 with 1000).
    # 100 masks: standard error ~0.2 px.
    assert avg_dist(224, 32, 0.6, num_masks=100, seed=0) == pytest.approx(15.0, abs=0.5)


def test_avg_dist_reference_value_224_16_06():
    assert avg_dist(224, 16, 0.6, num_masks=40, seed=0) == pytest.approx(7.1, abs=0.3)


def test_avg_dist_undefined_when_everything_is_masked():
    with pytest.raises(MimlensError, match="masks every block"):
        avg_dist(64, 16, 1.0, num_masks=2)
    with pytest.raises(MimlensError, match="no visible pixel"):
        masked_distance(np.ones((1, 4, 4), bool))


def test_avg_dist_grows_with_ratio_and_mask_patch_size():
    rows = avg_dist_sweep(64, mask_patch_sizes=(4, 16), ratios=(0.3, 0.6, 0.9), num_masks=10)
    assert [(r["mask_patch_size"], r["ratio"]) for r in rows] == [
        (4, 0.3), (4, 0.6), (4, 0.9), (16, 0.3), (16, 0.6), (16, 0.9)
    ]
    values = np.array([r["avg_dist_px"] for r in rows]).reshape(2, 3)
    assert (np.diff(values, axis=1) > 0).all()
    assert (values[1] > values[0]).all()
