"""Attention statistics on hand-built attention maps with known answers."""

import io
import itertools
import math

import pytest
import torch

from mimlens.analysis.attention import KL_FLOOR, AttentionAccumulator
from mimlens.analysis.capture import AttentionCall
from mimlens.errors import MimlensError


def call(probs, grid, stride=(16, 16), num_prefix=0, layer=0, image_size=None):
    image_size = image_size or (grid[0] * stride[0], grid[1] * stride[1])
    return AttentionCall(layer, f"blocks.{layer}", 0, probs, image_size, grid, stride, num_prefix=num_prefix)


def stats_of(probs, grid, stride=(16, 16), num_prefix=0, policy="renorm"):
    accumulator = AttentionAccumulator(policy)
    accumulator.update(call(probs, grid, stride, num_prefix))
    return accumulator.compute()


def cells(grid):
    return list(itertools.product(range(grid[0]), range(grid[1])))


def mean_pairwise_distance(grid, stride):
    pairs = list(itertools.product(cells(grid), repeat=2))
    total = sum(math.hypot(stride[0] * (r1 - r2), stride[1] * (c1 - c2)) for (r1, c1), (r2, c2) in pairs)
    return total / len(pairs)


def test_identity_attention_has_zero_distance_and_entropy():
    grid = (3, 4)
    probs = torch.eye(12).expand(2, 3, 12, 12).clone()
    stats = stats_of(probs, grid)
    for values in (stats.distance_px[0], stats.entropy[0], stats.entropy_norm[0], stats.head_kl[0]):
        assert torch.equal(values, torch.zeros_like(values))
    assert stats.queries[0].tolist() == [24.0] * 3


def test_one_hot_on_right_neighbour_is_exactly_one_stride():
    grid, stride = (3, 4), (8, 16)
    probs = torch.zeros(1, 2, 12, 12)
    for q, (r, c) in enumerate(cells(grid)):
        neighbour = c + 1 if c + 1 < grid[1] else c - 1  # the last column looks left: same distance
        probs[0, :, q, r * grid[1] + neighbour] = 1.0
    stats = stats_of(probs, grid, stride)
    assert stats.distance_px[0].tolist() == [16.0, 16.0]
    assert stats.entropy[0].tolist() == [0.0, 0.0]
    assert stats.distance_frac[0].tolist() == [16.0 / math.sqrt(24 * 64)] * 2


@pytest.mark.parametrize("grid", [(4, 4), (3, 5)])
def test_uniform_attention_gives_ln_n_and_the_mean_pairwise_distance(grid):
    n = grid[0] * grid[1]
    stride = (16, 16)
    stats = stats_of(torch.full((2, 2, n, n), 1 / n), grid, stride)
    expected = mean_pairwise_distance(grid, stride)
    assert stats.distance_px[0] == pytest.approx([expected] * 2, rel=1e-6)
    assert stats.entropy[0] == pytest.approx([math.log(n)] * 2, rel=1e-6)
    assert stats.entropy_norm[0] == pytest.approx([1.0, 1.0], rel=1e-6)
    assert stats.head_kl_mean[0] == pytest.approx(0.0, abs=1e-5)  # float32 maps: rounding only
    uniform = stats.uniform[0]
    assert uniform["distance_px"] == pytest.approx(expected, rel=1e-12)
    assert uniform["entropy"] == pytest.approx(math.log(n), rel=1e-12)


def test_uniform_reference_of_a_vit_layer_counts_the_cls_token_as_a_key():
    """An untrained layer spreads mass over CLS too: under ``drop`` the patch mass is 16/17."""
    grid, stride = (4, 4), (16, 16)
    probs = torch.eye(17).expand(1, 2, 17, 17)
    drop = stats_of(probs, grid, stride, num_prefix=1, policy="drop").uniform[0]
    renorm = stats_of(probs, grid, stride, num_prefix=1, policy="renorm").uniform[0]
    assert renorm["distance_px"] == pytest.approx(mean_pairwise_distance(grid, stride), rel=1e-12)
    assert drop["distance_px"] == pytest.approx(16 / 17 * renorm["distance_px"], rel=1e-12)
    assert drop["entropy"] == pytest.approx(16 / 17 * math.log(17), rel=1e-12)


def test_identical_heads_have_zero_kl_and_known_kl_otherwise():
    n = 6
    uniform = torch.full((n, n), 1 / n)
    one_hot = torch.eye(n)
    same = stats_of(torch.stack([uniform, uniform])[None], (2, 3))
    torch.testing.assert_close(same.head_kl[0], torch.zeros(2, 2, dtype=torch.float64), rtol=0, atol=1e-6)
    stats = stats_of(torch.stack([uniform, one_hot])[None], (2, 3))
    kl_uniform_to_one_hot = -math.log(n) - (n - 1) / n * math.log(KL_FLOOR)
    kl_one_hot_to_uniform = math.log(n)
    assert stats.head_kl[0][0, 1].item() == pytest.approx(kl_uniform_to_one_hot, rel=1e-6)
    assert stats.head_kl[0][1, 0].item() == pytest.approx(kl_one_hot_to_uniform, rel=1e-6)
    assert stats.head_kl_mean[0] == pytest.approx((kl_uniform_to_one_hot + kl_one_hot_to_uniform) / 2, rel=1e-6)


def test_entropy_is_xlogy_for_zeros_and_tiny_probabilities():
    row = torch.tensor([0.0, 1e-30, 1e-12, 0.25, 0.75 - 1e-12 - 1e-30])
    probs = row.expand(1, 1, 5, 5).clone()
    stats = stats_of(probs, (1, 5))
    expected = -torch.xlogy(row.double(), row.double()).sum().item()
    assert stats.entropy[0].item() == pytest.approx(expected, rel=1e-6)


def prefix_half_on_cls(num_heads=1):
    """1 CLS + 2x2 patches; every patch query puts 0.5 on CLS and 0.5 on its horizontal neighbour."""
    probs = torch.zeros(1, num_heads, 5, 5)
    probs[0, :, 0, 0] = 1.0  # the CLS query itself is never a query
    for q, neighbour in ((1, 2), (2, 1), (3, 4), (4, 3)):
        probs[0, :, q, 0] = 0.5
        probs[0, :, q, neighbour] = 0.5
    return probs


@pytest.mark.parametrize(
    "policy, distance, entropy, entropy_norm",
    [
        ("renorm", 10.0, 0.0, 0.0),
        ("drop", 5.0, 0.5 * math.log(2), 0.5 * math.log(2) / math.log(4)),
        ("keep", 5.0, math.log(2), math.log(2) / math.log(5)),
    ],
)
def test_prefix_policies_on_half_mass_on_cls(policy, distance, entropy, entropy_norm):
    stats = stats_of(prefix_half_on_cls(), (2, 2), (10, 10), num_prefix=1, policy=policy)
    assert stats.distance_px[0].item() == pytest.approx(distance, rel=1e-6)
    assert stats.entropy[0].item() == pytest.approx(entropy, rel=1e-6, abs=1e-7)
    assert stats.entropy_norm[0].item() == pytest.approx(entropy_norm, rel=1e-6, abs=1e-7)
    assert stats.queries[0].item() == 4
    assert stats.prefix_policy == policy


def test_renorm_reports_queries_with_all_mass_on_prefix_and_excludes_them():
    probs = prefix_half_on_cls(num_heads=2)
    probs[0, 0, 1] = torch.tensor([1.0, 0, 0, 0, 0])  # head 0, first patch query: everything on CLS
    stats = stats_of(probs, (2, 2), (10, 10), num_prefix=1)
    assert stats.degenerate_queries[0].tolist() == [1.0, 0.0]
    assert stats.queries[0].tolist() == [3.0, 4.0]
    for values in (stats.distance_px[0], stats.entropy[0], stats.entropy_norm[0], stats.head_kl[0]):
        assert torch.isfinite(values).all()
    assert stats.distance_px[0].tolist() == pytest.approx([10.0, 10.0])
    torch.testing.assert_close(stats.head_kl[0], torch.zeros(2, 2, dtype=torch.float64), rtol=0, atol=1e-6)
    assert math.isfinite(stats.head_kl_mean[0])


def test_a_head_with_every_query_degenerate_is_nan_and_null_in_json():
    probs = prefix_half_on_cls(num_heads=2)
    probs[0, 0, 1:] = torch.tensor([1.0, 0, 0, 0, 0])
    stats = stats_of(probs, (2, 2), (10, 10), num_prefix=1)
    assert stats.degenerate_queries[0].tolist() == [4.0, 0.0]
    assert math.isnan(stats.distance_px[0][0].item()) and stats.distance_px[0][1].item() == pytest.approx(10.0)
    layer = stats.to_json()["layers"][0]
    assert layer["distance_px"][0] is None and layer["degenerate_queries"] == [4.0, 0.0]


def test_kl_counts_only_queries_valid_in_both_heads():
    """Head 0 is degenerate on query 1: KL(1‖0) must average over the other three queries only."""
    probs = prefix_half_on_cls(num_heads=2)
    probs[0, 1] = 0.0
    probs[0, 1, :, 0] = 0.2
    probs[0, 1, :, 1:] = 0.2  # head 1: uniform over CLS and the 4 patches
    probs[0, 0, 1] = torch.tensor([1.0, 0, 0, 0, 0])
    stats = stats_of(probs, (2, 2), (10, 10), num_prefix=1)
    # head 1 renormalised: uniform 1/4; head 0 renormalised: one-hot on the neighbour.
    kl_10 = math.log(0.25) - 0.75 * math.log(KL_FLOOR)  # 1/4·(ln 1/4 − ln 1) + 3·1/4·(ln 1/4 − ln 1e-8)
    kl_01 = -math.log(0.25)
    assert stats.head_kl[0][1, 0].item() == pytest.approx(kl_10, rel=1e-6)
    assert stats.head_kl[0][0, 1].item() == pytest.approx(kl_01, rel=1e-6)


def test_kl_floors_the_second_distribution():
    probs = torch.tensor([[[0.5, 0.5], [0.5, 0.5]], [[1.0, 0.0], [0.0, 1.0]]])[None]
    stats = stats_of(probs, (1, 2))
    assert stats.head_kl[0][0, 1].item() == pytest.approx(math.log(0.5) - 0.5 * math.log(KL_FLOOR), rel=1e-6)


def random_maps(generator, batch, heads=3, n=13):
    logits = torch.randn(batch, heads, n, n, generator=generator) * 3
    return logits.softmax(-1)


def grid_call(probs, layer):
    return call(probs, (3, 4), (8, 8), num_prefix=1, layer=layer)


def accumulate(batches, policy):
    accumulator = AttentionAccumulator(policy)
    for maps in batches:
        for layer, probs in enumerate(maps):
            accumulator.update(grid_call(probs, layer))
    return accumulator


def assert_same_stats(a, b):
    assert a.num_images == b.num_images and a.layer_names == b.layer_names
    for key in ("distance_px", "distance_frac", "entropy", "entropy_norm", "head_kl", "queries"):
        for x, y in zip(getattr(a, key), getattr(b, key), strict=True):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-9)
    assert a.head_kl_mean == pytest.approx(b.head_kl_mean, rel=1e-6)


@pytest.mark.parametrize("policy", ["renorm", "drop", "keep"])
def test_one_batch_of_n_equals_n_batches_of_one_and_merge_equals_one_pass(policy):
    generator = torch.Generator().manual_seed(1)
    maps = [random_maps(generator, 4), random_maps(generator, 4)]
    whole = accumulate([maps], policy)
    singles = accumulate([[m[i : i + 1] for m in maps] for i in range(4)], policy)
    assert_same_stats(whole.compute(), singles.compute())
    first = accumulate([[m[:1] for m in maps]], policy)
    rest = accumulate([[m[1:] for m in maps]], policy)
    assert_same_stats(first.merge(rest).compute(), whole.compute())
    assert whole.compute().num_images == 4


def test_state_dict_round_trip_and_single_process_all_reduce():
    generator = torch.Generator().manual_seed(2)
    accumulator = accumulate([[random_maps(generator, 2), random_maps(generator, 2)]], "renorm")
    buffer = io.BytesIO()
    torch.save(accumulator.state_dict(), buffer)
    buffer.seek(0)
    restored = AttentionAccumulator()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert_same_stats(restored.compute(), accumulator.compute())
    assert_same_stats(restored.all_reduce_().compute(), accumulator.compute())


def test_half_precision_maps_are_upcast():
    probs = random_maps(torch.Generator().manual_seed(3), 2)
    exact = stats_of(probs.to(torch.bfloat16).float(), (3, 4), (8, 8), num_prefix=1)
    half = stats_of(probs.to(torch.bfloat16), (3, 4), (8, 8), num_prefix=1)
    assert_same_stats(half, exact)
    assert half.dtype == "bfloat16"


def test_bad_policy_image_size_and_layer_order_raise():
    with pytest.raises(MimlensError, match="prefix_policy='mean'"):
        AttentionAccumulator("mean")
    accumulator = AttentionAccumulator()
    probs = torch.full((1, 1, 4, 4), 0.25)
    accumulator.update(call(probs, (2, 2)))
    with pytest.raises(MimlensError, match="one image size"):
        accumulator.update(call(probs, (2, 2), image_size=(64, 64)))
    with pytest.raises(MimlensError, match="layer 2"):
        accumulator.update(call(probs, (2, 2), layer=2))
    with pytest.raises(MimlensError, match="cannot merge"):
        accumulator.merge(accumulate([[random_maps(torch.Generator().manual_seed(0), 1)]], "drop"))


def padded_window_call():
    """A 1x3 map in 1x2 windows: window 1 holds token 2 and a padding slot.

    Tokens 0 and 1 look at each other (one stride, 10 px). Token 2: head 0 puts everything on the padding
    key, head 1 splits it between itself and the padding. The padding slot's own row is noise.
    """
    probs = torch.zeros(2, 2, 2, 2)  # (windows, heads, slots, slots)
    probs[0, :, 0, 1] = probs[0, :, 1, 0] = 1.0
    probs[1, 0, 0] = torch.tensor([0.0, 1.0])
    probs[1, 1, 0] = torch.tensor([0.5, 0.5])
    probs[1, :, 1] = torch.tensor([0.9, 0.1])
    return AttentionCall(0, "layers.0.blocks.0", 0, probs, (10, 30), (1, 3), (10, 10), 0, (1, 2), (0, 0), None)


@pytest.mark.parametrize(
    "policy, distance, entropy, queries, degenerate",
    [
        ("renorm", [10.0, 20 / 3], [0.0, 0.0], [2.0, 3.0], [1.0, 0.0]),
        ("drop", [20 / 3, 20 / 3], [0.0, 0.5 * math.log(2) / 3], [3.0, 3.0], [0.0, 0.0]),
        ("keep", [20 / 3, 20 / 3], [0.0, math.log(2) / 3], [3.0, 3.0], [0.0, 0.0]),
    ],
)
def test_swin_padding_keys_follow_the_prefix_policy_and_padding_is_never_a_query(
    policy, distance, entropy, queries, degenerate
):
    accumulator = AttentionAccumulator(policy)
    accumulator.update(padded_window_call())
    stats = accumulator.compute()
    assert stats.distance_px[0].tolist() == pytest.approx(distance, rel=1e-6)
    assert stats.entropy[0].tolist() == pytest.approx(entropy, rel=1e-6, abs=1e-7)
    assert stats.queries[0].tolist() == queries
    assert stats.degenerate_queries[0].tolist() == degenerate
    if policy == "renorm":  # pairs average over tokens 0 and 1 only, where both heads agree
        torch.testing.assert_close(stats.head_kl[0], torch.zeros(2, 2, dtype=torch.float64), rtol=0, atol=1e-6)
