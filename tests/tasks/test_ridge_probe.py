"""Streaming ridge regression: known answers on constructed data."""

import math

import pytest
import torch

from mimlens.tasks.probes.ridge import LAMBDA_FACTORS, RidgeSums, Standardiser, fit_ridge, select_ridge, squared_error


def sums_of(x, y, batches=1):
    sums = RidgeSums(x.shape[1], y.shape[1])
    for xb, yb in zip(x.chunk(batches), y.chunk(batches), strict=True):
        sums.update(xb, yb)
    return sums


def linear_data(n, generator, noise=0.0):
    x = torch.randn(n, 8, generator=generator, dtype=torch.float64) * torch.linspace(0.1, 5, 8, dtype=torch.float64)
    x = x + torch.arange(8, dtype=torch.float64)  # features far from zero mean: the bias and standardising matter
    a = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    return x, a


def test_features_that_hold_the_target_linearly_give_a_near_perfect_probe():
    g = torch.Generator().manual_seed(0)
    x, a = linear_data(600, g)
    bias = torch.tensor([1.0, -2.0, 5.0], dtype=torch.float64)
    y = x @ a + bias
    fit, info = select_ridge(sums_of(x[:400], y[:400]), sums_of(x[400:500], y[400:500]))
    assert info["lambda_factor"] == min(LAMBDA_FACTORS)  # no noise: the least shrinkage wins
    pred = fit.predict(x[500:])
    r2 = 1 - ((pred - y[500:]) ** 2).sum(0) / ((y[500:] - y[500:].mean(0)) ** 2).sum(0)
    assert r2.min() > 0.9999


def test_targets_unrelated_to_the_features_give_the_mean_predictor():
    g = torch.Generator().manual_seed(1)
    x, _ = linear_data(4000, g)
    y = torch.randn(4000, 2, generator=g, dtype=torch.float64) + torch.tensor([3.0, -1.0], dtype=torch.float64)
    fit, info = select_ridge(sums_of(x[:1600], y[:1600]), sums_of(x[1600:2000], y[1600:2000]))
    assert info["lambda_factor"] >= 10  # heavy shrinkage towards the mean
    test = slice(2000, None)
    mse = ((fit.predict(x[test]) - y[test]) ** 2).mean()
    mean_only = ((y[:2000].mean(0) - y[test]) ** 2).mean()
    assert mse == pytest.approx(float(mean_only), rel=0.01)


def test_streaming_in_batches_equals_one_batch():
    g = torch.Generator().manual_seed(2)
    x, a = linear_data(257, g)
    y = x @ a + 0.3 * torch.randn(257, 3, generator=g, dtype=torch.float64)
    one, many = sums_of(x, y), sums_of(x, y, batches=7)
    for name in one.sums:
        torch.testing.assert_close(many.sums[name], one.sums[name], rtol=1e-12, atol=1e-9)
    scale = Standardiser.of(one)
    torch.testing.assert_close(fit_ridge(many, scale, 0.1).weight, fit_ridge(one, scale, 0.1).weight,
                               rtol=1e-10, atol=1e-12)


def test_squared_error_from_sums_equals_the_direct_sum():
    g = torch.Generator().manual_seed(3)
    x, a = linear_data(100, g)
    y = x @ a + torch.randn(100, 3, generator=g, dtype=torch.float64)
    sums = sums_of(x, y)
    fit = fit_ridge(sums_of(x[:50], y[:50]), Standardiser.of(sums), 0.5)
    torch.testing.assert_close(squared_error(sums, fit), ((fit.predict(x) - y) ** 2).sum(0), rtol=1e-9, atol=1e-9)


def test_closed_form_matches_the_textbook_ridge_on_standardised_centred_data():
    g = torch.Generator().manual_seed(4)
    x, a = linear_data(80, g)
    y = x @ a + torch.randn(80, 3, generator=g, dtype=torch.float64)
    lam = 0.7
    z = (x - x.mean(0)) / x.std(0, unbiased=False)
    yc = y - y.mean(0)
    w = torch.linalg.solve(z.T @ z + 80 * lam * torch.eye(8, dtype=torch.float64), z.T @ yc)
    expected = z @ w + y.mean(0)
    torch.testing.assert_close(fit_ridge(sums_of(x, y), Standardiser.of(sums_of(x, y)), lam).predict(x), expected)


def test_lambda_selection_picks_the_known_best():
    # One standardised feature z (variance 1, mean 0 on the fitted rows and on all rows). Fitted rows: y = 3 + 2z,
    # so the ridge slope is 2 / (1 + λ). Held-out rows: y = 3 + 2z / (1 + λ*), whose squared error is least at
    # λ = λ*; the mean eigenvalue of ZᵀZ/n is 1, so λ* = 10^0.5 is a grid point.
    best = 10 ** 0.5
    x = torch.linspace(-1, 1, 41, dtype=torch.float64)[:, None] * 4 + 7
    z = (x - x.mean()) / x.std(unbiased=False)
    fit, info = select_ridge(sums_of(x, 3 + 2 * z), sums_of(x, 3 + 2 * z / (1 + best)))
    assert info["lambda_factor"] == pytest.approx(best)
    assert fit.lam == pytest.approx(best)
    errors = info["held_out_mse"]
    assert min(errors) == errors[LAMBDA_FACTORS.index(info["lambda_factor"])] == pytest.approx(0, abs=1e-12)
    # refitted on both parts: slope on z = mean of the two parts' slopes, shrunk by 1 + λ*
    slope = (2 + 2 / (1 + best)) / 2 / (1 + best)
    torch.testing.assert_close(fit.predict(x), 3 + slope * z)


def test_constant_features_are_harmless():
    x = torch.cat([torch.ones(30, 1, dtype=torch.float64) * 5, torch.arange(30.0, dtype=torch.float64)[:, None]], 1)
    y = 2 * x[:, 1:] - 1
    fit, _ = select_ridge(sums_of(x[:24], y[:24]), sums_of(x[24:], y[24:]))
    assert torch.isfinite(fit.weight).all()
    assert math.isclose(float(fit.predict(x[:1])[0, 0]), -1.0, abs_tol=0.05)
