"""CKA mathematics: the Kornblith toy known answers from reference formulas written here, forms that must agree,
and the invariances every similarity index of this kind has."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mimlens.analysis.cka import (
    center_gram,
    cka,
    feature_cka,
    gram_linear,
    gram_rbf,
    hsic0,
    hsic1,
    linear_hsic_features,
    u_center_gram,
)
from mimlens.errors import MimlensError

# -- reference formulas, written from the definitions (explicit H, Song's traces, pairwise loops) ----------------


def ref_hsic0(k, l):
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def ref_hsic1(k, l):
    """Song et al. 2012, eq. (5): traces and ones-vectors of the zero-diagonal Grams."""
    n = len(k)
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one @ kt @ lt @ one)) / (n * (n - 3))


def ref_rbf(x, tau=0.5):
    n = len(x)
    sq = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            sq[i, j] = np.sum((x[i] - x[j]) ** 2)
    return np.exp(-sq / (2 * tau**2 * np.median(sq)))


def ref_cka(k, l, hsic):
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


@pytest.fixture(scope="module")
def toy():
    """Kornblith et al.'s demo data: legacy seed 1337, X 100x10 standard normal, Y = a second draw + X."""
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    return x, y


# -- known answers -------------------------------------------------------------------------------------------------


def test_reference_formulas_give_the_published_toy_values(toy):
    x, y = toy
    assert ref_cka(x @ x.T, y @ y.T, ref_hsic0) == pytest.approx(0.55761, abs=5e-6)
    assert ref_cka(ref_rbf(x), ref_rbf(y), ref_hsic0) == pytest.approx(0.65483, abs=5e-6)
    assert ref_cka(x @ x.T, y @ y.T, ref_hsic1) == pytest.approx(0.51346, abs=5e-6)


def test_feature_cka_gives_the_published_toy_values(toy):
    x, y = toy
    assert feature_cka(x, y) == pytest.approx(0.55761, abs=5e-6)
    assert feature_cka(x, y, kernel="rbf", threshold=0.5) == pytest.approx(0.65483, abs=5e-6)
    assert feature_cka(x, y, debiased=True) == pytest.approx(0.51346, abs=5e-6)


def test_library_hsic_equals_reference_formulas(toy):
    x, y = toy
    k, l = gram_linear(x), gram_linear(y)
    assert float(hsic0(k, l)) == pytest.approx(ref_hsic0(x @ x.T, y @ y.T), rel=1e-12)
    assert float(hsic1(k, l)) == pytest.approx(ref_hsic1(x @ x.T, y @ y.T), rel=1e-12)
    rk, rl = ref_rbf(x), ref_rbf(y)
    np.testing.assert_allclose(gram_rbf(x, threshold=0.5).numpy(), rk, rtol=1e-12, atol=1e-14)
    assert feature_cka(x, y, kernel="rbf", debiased=True) == pytest.approx(ref_cka(rk, rl, ref_hsic1), abs=1e-12)


def test_kornblith_signatures_give_the_published_toy_values(toy):
    # the reference notebook's calls: cka(gram_linear(X), gram_linear(Y)), cka(gram_rbf(X, 0.5), gram_rbf(Y, 0.5)),
    # cka(gram_linear(X), gram_linear(Y), debiased=True)
    x, y = toy
    assert cka(gram_linear(x), gram_linear(y)) == pytest.approx(0.55761, abs=5e-6)
    assert cka(gram_rbf(x, 0.5), gram_rbf(y, 0.5)) == pytest.approx(0.65483, abs=5e-6)
    assert cka(gram_linear(x), gram_linear(y), debiased=True) == pytest.approx(0.51346, abs=5e-6)


def test_gram_rbf_default_threshold_is_one(toy):
    x, _ = toy
    np.testing.assert_allclose(gram_rbf(x).numpy(), ref_rbf(x, tau=1.0), rtol=1e-12, atol=1e-14)


def test_unbiased_center_gram_is_u_centring_as_kornblith_writes_it():
    # Kornblith et al.'s unbiased branch: zero diagonal, means = column sums / (n-2) minus their sum / (2(n-1)),
    # subtracted from rows and columns, diagonal zeroed again
    rng = np.random.default_rng(8)
    k = gram_linear(rng.normal(size=(9, 4))).numpy()
    ref = k.copy()
    n = len(ref)
    np.fill_diagonal(ref, 0)
    means = ref.sum(0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    ref -= means[:, None] + means[None, :]
    np.fill_diagonal(ref, 0)
    np.testing.assert_allclose(center_gram(k, unbiased=True).numpy(), ref, atol=1e-10)
    np.testing.assert_allclose(center_gram(k, unbiased=True).numpy(), u_center_gram(k).numpy(), atol=1e-12)


def test_gram_cka_refuses_feature_matrices_and_points_to_feature_cka():
    x = np.random.default_rng(9).normal(size=(10, 3))
    with pytest.raises(MimlensError, match=r"not a symmetric n x n Gram matrix.*feature_cka"):
        cka(x, x)
    with pytest.raises(MimlensError, match="the same samples"):
        cka(gram_linear(x), gram_linear(x[:9]))


def test_rbf_median_averages_the_two_middle_distances():
    # 2 samples: squared distances [0, 4, 4, 0], median (0 + 4) / 2 = 2 -> K01 = exp(-4 / (2 * 0.25 * 2))
    k = gram_rbf(np.array([[0.0], [2.0]]), threshold=0.5)
    assert float(k[0, 1]) == pytest.approx(np.exp(-4.0))


def test_centring_matches_explicit_projection_and_u_centring_has_zero_sums():
    rng = np.random.default_rng(0)
    k = gram_linear(rng.normal(size=(9, 4)))
    h = np.eye(9) - np.ones((9, 9)) / 9
    np.testing.assert_allclose(center_gram(k).numpy(), h @ k.numpy() @ h, atol=1e-12)
    u = u_center_gram(k)
    assert torch.all(u.diagonal() == 0)
    np.testing.assert_allclose(u.sum(0).numpy(), 0, atol=1e-10)  # rows and columns of Ũ(K) sum to zero


# -- forms that must agree --------------------------------------------------------------------------------------


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_space_form_equals_gram_form(debiased):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 7)) + 3.0, rng.normal(size=(50, 4)) @ rng.normal(size=(4, 12))
    hsic = hsic1 if debiased else hsic0
    gram = hsic(gram_linear(x), gram_linear(y))
    assert float(linear_hsic_features(x, y, debiased=debiased)) == pytest.approx(float(gram), rel=1e-10)


def test_wide_and_tall_inputs_give_the_same_cka():
    # feature_cka() switches to the feature-space form when n > d; appending zero columns makes the Gram form cheaper.
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 6))
    wide_x, wide_y = np.hstack([x, np.zeros((30, 200))]), np.hstack([y, np.zeros((30, 200))])
    for debiased in (False, True):
        wide = feature_cka(wide_x, wide_y, debiased=debiased)
        assert feature_cka(x, y, debiased=debiased) == pytest.approx(wide, abs=1e-12)


def test_tensor_and_array_inputs_agree():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 3)), rng.normal(size=(20, 5))
    got = feature_cka(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    assert got == pytest.approx(feature_cka(x, y), abs=1e-6)


# -- properties -------------------------------------------------------------------------------------------------

VARIANTS = [("linear", False), ("linear", True), ("rbf", False), ("rbf", True)]


def _pair(seed, n, d1, d2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1))
    y = x @ rng.normal(size=(d1, d2)) + rng.normal(size=(n, d2))
    return rng, x, y


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(8, 40), d1=st.integers(1, 6), d2=st.integers(1, 6))
def test_self_similarity_symmetry_and_invariances(seed, n, d1, d2):
    rng, x, y = _pair(seed, n, d1, d2)
    q, _ = np.linalg.qr(rng.normal(size=(d1, d1)))
    scale = float(rng.uniform(0.01, 100))
    shift = rng.normal(size=(1, d1)) * 50
    for kernel, debiased in VARIANTS:
        value = feature_cka(x, y, kernel=kernel, debiased=debiased)
        assert feature_cka(x, x, kernel=kernel, debiased=debiased) == pytest.approx(1.0, abs=1e-9)
        assert feature_cka(y, x, kernel=kernel, debiased=debiased) == pytest.approx(value, abs=1e-9)
        for transformed in (x @ q, scale * x, x + shift):
            assert feature_cka(transformed, y, kernel=kernel, debiased=debiased) == pytest.approx(value, abs=1e-7)


def test_linear_cka_is_not_invariant_to_anisotropic_scaling():
    # the invariance tests above would pass for a constant; this one tells a real similarity index apart
    _, x, y = _pair(4, 40, 3, 3)
    assert abs(feature_cka(x * np.array([1.0, 1.0, 30.0]), y) - feature_cka(x, y)) > 0.01


def test_debiased_cka_near_zero_on_independent_data_while_biased_is_inflated():
    rng = np.random.default_rng(5)
    biased_small, debiased_small, biased_large = [], [], []
    for _ in range(40):
        x, y = rng.normal(size=(16, 8)), rng.normal(size=(16, 8))
        biased_small.append(feature_cka(x, y))
        debiased_small.append(feature_cka(x, y, debiased=True))
    for _ in range(5):
        x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
        biased_large.append(feature_cka(x, y))
    assert abs(np.mean(debiased_small)) < 0.05
    assert np.mean(biased_small) > 0.3  # small n inflates the biased estimator on unrelated data
    assert np.mean(biased_large) < np.mean(biased_small) / 4


def test_float32_features_with_huge_channels_match_float64():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(64, 32))
    y = x @ rng.normal(size=(32, 16)) * 0.3 + rng.normal(size=(64, 16))
    x[:, :3] += 1000.0
    y[:, 5:7] += 1000.0
    for debiased in (False, True):
        reference = ref_cka(x @ x.T, y @ y.T, ref_hsic1 if debiased else ref_hsic0)  # float64 throughout
        got = feature_cka(x.astype(np.float32), y.astype(np.float32), debiased=debiased)
        assert got == pytest.approx(reference, abs=1e-4)


# -- bad input --------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(10, 3))
    with pytest.raises(MimlensError, match="10 samples and y has 9"):
        feature_cka(x, x[:9])
    with pytest.raises(MimlensError, match=r"expected an \(n, d\) matrix"):
        feature_cka(x.ravel(), x.ravel())
    with pytest.raises(MimlensError, match="zero variance"):
        feature_cka(np.ones((10, 3)), x)
    with pytest.raises(MimlensError, match="at least 4"):
        feature_cka(x[:3], x[:3], debiased=True)
    with pytest.raises(MimlensError, match="kernel='cosine'"):
        feature_cka(x, x, kernel="cosine")
    with pytest.raises(MimlensError, match="median squared distance"):
        gram_rbf(np.vstack([np.zeros((6, 2)), np.ones((1, 2))]))
