"""CKA's calibration: half-sample replicates and the permutation null of MinibatchCKA against brute force on
the same draws, pairing by (seed, batch index), known answers, and CKAResult's JSON."""

import json
import math

import numpy as np
import pytest
import timm
import torch
from torch import nn

from mimlens.analysis.cka import UNCALIBRATED, CKAResult, MinibatchCKA, batch_draws, cka_matrix, half_size
from mimlens.errors import MimlensError


def song_hsic1(k, l):
    """Song et al. 2012 unbiased HSIC of two Gram matrices, from its trace formula."""
    k, l = k.copy(), l.copy()
    n = len(k)
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (np.trace(k @ l) + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))


def linear(x):
    x = x - x.mean(0)
    return x @ x.T


def rbf(x, threshold=0.5):
    """Kornblith et al.'s RBF Gram: exp(-d² / (2 τ² median d²)), the median over all n² distances."""
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-sq / (2 * threshold**2 * np.median(sq)))


def layers(n=60, seed=0, dims=(5, 8, 3)):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 6))
    return {f"blocks.{i}": base @ rng.normal(size=(6, d)) + rng.normal(size=(n, d)) * (i + 1) * 0.5
            for i, d in enumerate(dims)}


BATCHES = [slice(0, 24), slice(24, 48), slice(48, 60)]  # a ragged last batch


def feed(acc, a, b=None, order=None):
    for index in order or range(len(BATCHES)):
        s = BATCHES[index]
        acc.update({k: torch.tensor(v[s]) for k, v in a.items()},
                   None if b is None else {k: torch.tensor(v[s]) for k, v in b.items()}, index=index)
    return acc


def brute_force(a, b, gram, seed, halves, permutations):
    """Per half-sample and per permutation, every pair's CKA from the Song HSIC of the drawn samples, each batch
    weighted by its sample count, summed over batches, one ratio."""
    names_a, names_b = list(a), list(b)
    shape = (len(names_a), len(names_b))
    half = {key: np.zeros((halves, *shape)) for key in ("cross", "self_a", "self_b")}
    null, self_a, self_b = np.zeros((permutations, *shape)), np.zeros(shape), np.zeros(shape)
    for index, s in enumerate(BATCHES):
        n = s.stop - s.start
        subsets, perms = (t.numpy() for t in batch_draws(seed, index, n, halves, permutations))
        for i, x in enumerate(names_a):
            for j, y in enumerate(names_b):
                k, l = gram(a[x][s]), gram(b[y][s])
                self_a[i, j] += n * song_hsic1(k, k)
                self_b[i, j] += n * song_hsic1(l, l)
                for r, subset in enumerate(subsets):
                    ks, ls = k[np.ix_(subset, subset)], l[np.ix_(subset, subset)]
                    m = len(subset)
                    half["cross"][r, i, j] += m * song_hsic1(ks, ls)
                    half["self_a"][r, i, j] += m * song_hsic1(ks, ks)
                    half["self_b"][r, i, j] += m * song_hsic1(ls, ls)
                for p, perm in enumerate(perms):
                    null[p, i, j] += n * song_hsic1(k, l[np.ix_(perm, perm)])
    replicates = half["cross"] / np.sqrt(half["self_a"] * half["self_b"])
    return replicates, null / np.sqrt(self_a * self_b)


def test_half_samples_are_halves_without_replacement_and_depend_only_on_seed_and_batch_index():
    subsets, perms = batch_draws(3, 7, 24, 5, 4)
    assert subsets.shape == (5, 12) and perms.shape == (4, 24)
    assert all(len(set(row.tolist())) == 12 for row in subsets)
    assert all(sorted(row.tolist()) == list(range(24)) for row in perms)
    again = batch_draws(3, 7, 24, 5, 4)
    assert torch.equal(subsets, again[0]) and torch.equal(perms, again[1])
    assert not torch.equal(subsets, batch_draws(3, 8, 24, 5, 4)[0])
    assert not torch.equal(subsets, batch_draws(4, 7, 24, 5, 4)[0])
    assert [half_size(n) for n in (4, 7, 8, 9, 64)] == [4, 4, 4, 4, 32]


def test_replicates_and_null_equal_brute_force_within_one_model():
    a = layers()
    acc = feed(MinibatchCKA(list(a), bootstrap=6, permutations=5, seed=2), a)
    replicates, null = brute_force(a, a, linear, seed=2, halves=6, permutations=5)
    np.testing.assert_allclose(acc.replicates().numpy(), replicates, atol=1e-10)
    np.testing.assert_allclose(acc.null().numpy(), null, atol=1e-10)


def test_replicates_and_null_equal_brute_force_across_two_models():
    a, b = layers(seed=0), layers(seed=1, dims=(4, 7))
    acc = feed(MinibatchCKA(list(a), list(b), bootstrap=4, permutations=3, seed=5), a, b)
    replicates, null = brute_force(a, b, linear, seed=5, halves=4, permutations=3)
    np.testing.assert_allclose(acc.replicates().numpy(), replicates, atol=1e-10)
    np.testing.assert_allclose(acc.null().numpy(), null, atol=1e-10)


def test_rbf_replicates_keep_each_batch_bandwidth_and_equal_brute_force():
    a = layers()
    acc = feed(MinibatchCKA(list(a), kernel="rbf", bootstrap=3, permutations=3, seed=1), a)
    replicates, null = brute_force(a, a, rbf, seed=1, halves=3, permutations=3)
    np.testing.assert_allclose(acc.replicates().numpy(), replicates, atol=1e-10)
    np.testing.assert_allclose(acc.null().numpy(), null, atol=1e-10)


def test_two_models_on_the_same_batches_are_paired_whatever_order_the_batches_arrive_in():
    a, b = layers(seed=0), layers(seed=3)
    first = feed(MinibatchCKA(list(a), bootstrap=5, permutations=4, seed=9), a)
    shuffled = feed(MinibatchCKA(list(a), bootstrap=5, permutations=4, seed=9), a, order=[2, 0, 1])
    for key in ("boot_cross", "boot_self_a", "null_cross"):
        torch.testing.assert_close(first.sums[key], shuffled.sums[key], rtol=1e-12, atol=1e-12)
    # model b's replicates use the same halves as model a's: its brute force on a's draws matches
    other = feed(MinibatchCKA(list(b), bootstrap=5, seed=9), b)
    np.testing.assert_allclose(other.replicates().numpy(), brute_force(b, b, linear, 9, 5, 0)[0], atol=1e-10)


def test_identical_features_give_an_interval_of_one_and_the_smallest_p_value():
    x = layers()["blocks.1"]
    acc = feed(MinibatchCKA(["x"], ["y"], bootstrap=20, permutations=19, seed=0), {"x": x}, {"y": x})
    np.testing.assert_allclose(acc.replicates().numpy(), 1.0, atol=1e-12)
    assert acc.p_values().item() == pytest.approx(1 / 20)


def test_independent_features_give_a_null_near_the_estimate_and_dependent_ones_the_smallest_p_value():
    rng = np.random.default_rng(4)
    x, noise = rng.normal(size=(60, 6)), rng.normal(size=(60, 6))
    acc = feed(MinibatchCKA(["x"], ["noise", "copy"], permutations=99, seed=0),
               {"x": x}, {"noise": noise, "copy": x @ rng.normal(size=(6, 6)) + 0.3 * noise})
    observed, null = acc.compute()[0], acc.null()[:, 0]
    p = acc.p_values()[0]
    assert p[0] > 0.2 and abs(null[:, 0].mean() - observed[0]) < 0.05 and abs(observed[0]) < 0.1
    assert p[1] == pytest.approx(1 / 100) and null[:, 1].max() < 0.3 < observed[1]


def test_calibration_needs_the_gram_form_and_non_negative_counts():
    with pytest.raises(MimlensError, match="form='gram'"):
        MinibatchCKA(["a"], form="features", bootstrap=10)
    with pytest.raises(MimlensError, match="bootstrap=-1"):
        MinibatchCKA(["a"], bootstrap=-1)


def tiny_vit(seed):
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=3,
                             embed_dim=24, num_heads=2, num_classes=0)


IMAGES = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_cka_matrix_calibrates_and_its_json_round_trip_keeps_everything():
    result = cka_matrix(tiny_vit(0), IMAGES, batch_size=16, transform_a=nn.Identity(), bootstrap=30,
                        permutations=20, seed=1)
    low, high = result.interval
    assert result.num_images == 40 and result.batch_size == 16 and result.seed == 1 and result.images is not None
    assert (low <= result.matrix + 1e-12).all() and (result.matrix <= high + 1e-12).all()
    assert len(result.off_diagonal_replicates) == 30 and result.p_value.shape == result.matrix.shape
    assert "30 replicates on random halves" in result.estimator and "20 permutations" in result.estimator
    doc = json.loads(json.dumps(result.to_json()))
    again = CKAResult.from_json(doc)
    assert again.to_json() == doc
    torch.testing.assert_close(again.interval[0], low, rtol=0, atol=0)
    old = {k: v for k, v in doc.items() if k not in ("batch_size", "seed", "images", "bootstrap", "permutations",
                                                     "interval", "null_mean", "p_value", "off_diagonal_replicates")}
    loaded = CKAResult.from_json(old)
    assert loaded.interval is None and loaded.bootstrap == 0 and loaded.off_diagonal_replicates is None


def test_two_models_on_the_same_images_draw_the_same_halves():
    runs = [cka_matrix(tiny_vit(seed), IMAGES, batch_size=16, transform_a=nn.Identity(), bootstrap=10,
                       permutations=0) for seed in (0, 1)]
    assert runs[0].images == runs[1].images
    other = cka_matrix(tiny_vit(0), IMAGES.flip(0), batch_size=16, transform_a=nn.Identity(), bootstrap=10,
                       permutations=0)
    assert other.images != runs[0].images
    # the same model twice: the same replicates (paired draws), a different seed: other ones
    again = cka_matrix(tiny_vit(0), IMAGES, batch_size=16, transform_a=nn.Identity(), bootstrap=10, permutations=0)
    reseeded = cka_matrix(tiny_vit(0), IMAGES, batch_size=16, transform_a=nn.Identity(), bootstrap=10,
                          permutations=0, seed=1)
    assert again.off_diagonal_replicates == runs[0].off_diagonal_replicates
    assert reseeded.off_diagonal_replicates != runs[0].off_diagonal_replicates


def test_the_token_unit_says_it_is_not_calibrated():
    result = cka_matrix(tiny_vit(0), IMAGES[:8], unit="token", transform_a=nn.Identity())
    assert result.interval is None and result.p_value is None and UNCALIBRATED in result.notes
    assert not math.isnan(float(result.matrix[0, 1]))


def test_the_analysis_config_checks_the_calibration_counts():
    from mimlens.analysis.run import ANALYSIS_DEFAULTS, DATA_DEFAULTS, check_config

    assert ANALYSIS_DEFAULTS["cka_bootstrap"] == ANALYSIS_DEFAULTS["cka_permutations"] == 200
    check_config({"data": dict(DATA_DEFAULTS), "analysis": {**ANALYSIS_DEFAULTS, "cka_bootstrap": 0}})
    with pytest.raises(MimlensError, match=r"analysis.cka_permutations=-1: expected an integer >= 0"):
        check_config({"data": dict(DATA_DEFAULTS), "analysis": {**ANALYSIS_DEFAULTS, "cka_permutations": -1}})
