"""The calibration of mutual k-NN, CKNNA and RSA: every block pair at once equals the reference formula, the
half-sample replicates and the permutation null equal the reference recomputed on the same halves and
permutations, and known answers (identical representations, independent and dependent features)."""

import numpy as np
import pytest
import torch
from similarity_reference import REFERENCES, shared_data

from mimlens.analysis.cka import batch_draws, half_size
from mimlens.analysis.similarity import FullData
from mimlens.analysis.similarity_calibration import (
    calibrate,
    full_data_matrices,
    half_replicates,
    p_values,
    permutation_null,
    permuted,
)

NAMES = ["mutual_knn", "cknna", "rsa"]
TOLERANCE = {"mutual_knn": 1e-12, "cknna": 1e-9, "rsa": 1e-9}
K = 4


def sides(n=40):
    """Two blocks of model a and two of model b, related through a shared signal."""
    a = shared_data(n, (12, 20), seed=0)
    b = [a[0][:, :6] + 0.3 * np.random.default_rng(1).normal(size=(n, 6)), shared_data(n, (9,), seed=2)[0]]
    return [torch.tensor(x) for x in a], [torch.tensor(y) for y in b]


def reference(rows_a, rows_b, name):
    return torch.tensor([[REFERENCES[name](x.numpy(), y.numpy(), topk=K) if name != "rsa" else
                          REFERENCES[name](x.numpy(), y.numpy()) for y in rows_b] for x in rows_a], dtype=torch.float64)


def test_every_block_pair_at_once_equals_the_reference():
    rows_a, rows_b = sides()
    found = full_data_matrices([FullData.of(x, K) for x in rows_a], [FullData.of(y, K) for y in rows_b], NAMES)
    for name in NAMES:
        torch.testing.assert_close(found[name], reference(rows_a, rows_b, name), rtol=0, atol=TOLERANCE[name])


def test_a_permuted_side_equals_a_new_search_on_permuted_rows():
    _, rows_b = sides()
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(5))
    for y in rows_b:
        shuffled, searched = permuted(FullData.of(y, K), perm), FullData.of(y[perm], K)
        assert torch.equal(shuffled.knn.sort(1).values, searched.knn.sort(1).values)
        torch.testing.assert_close(shuffled.rdm_ranks, searched.rdm_ranks, rtol=0, atol=1e-15)
        assert shuffled.cknna_self == pytest.approx(searched.cknna_self, abs=1e-15)


@pytest.mark.parametrize("within", [False, True])
def test_replicates_equal_the_reference_on_the_same_halves(within):
    rows_a, rows_b = sides()
    halves, _ = batch_draws(3, 0, 40, 4, 0)
    assert halves.shape == (4, half_size(40)) and all(len(set(h.tolist())) == 20 for h in halves)
    found = half_replicates(rows_a, None if within else rows_b, NAMES, K, halves)
    side_b = rows_a if within else rows_b
    for name in NAMES:
        brute = torch.stack([reference([x[h] for x in rows_a], [y[h] for y in side_b], name) for h in halves])
        torch.testing.assert_close(found[name], brute, rtol=0, atol=TOLERANCE[name])


def test_the_null_equals_the_reference_with_the_same_permutations():
    rows_a, rows_b = sides()
    _, perms = batch_draws(3, 0, 40, 0, 5)
    found = permutation_null([FullData.of(x, K) for x in rows_a], [FullData.of(y, K) for y in rows_b], NAMES, perms)
    for name in NAMES:
        brute = torch.stack([reference(rows_a, [y[p] for y in rows_b], name) for p in perms])
        torch.testing.assert_close(found[name], brute, rtol=0, atol=TOLERANCE[name])


def _calibrated(x, y, replicates=20, permutations=30, seed=0):
    data_a, data_b = [FullData.of(x, K)], [FullData.of(y, K)]
    observed = full_data_matrices(data_a, data_b, NAMES)
    return observed, calibrate([x], [y], data_a, data_b, observed, K, replicates, permutations, seed)


def test_identical_representations_sit_at_the_maximum_and_beat_every_permutation():
    x = torch.tensor(shared_data(60, (16,))[0])
    observed, found = _calibrated(x, x.clone())
    for name in NAMES:
        assert observed[name].item() == pytest.approx(1.0, abs=1e-12)
        assert found[name]["low"].item() == pytest.approx(1.0, abs=1e-12)
        assert found[name]["high"].item() == pytest.approx(1.0, abs=1e-12)
        assert found[name]["p_value"].item() == 1 / 31


def test_independent_features_are_not_significant_and_dependent_ones_are():
    rng = np.random.default_rng(4)
    n = 80
    x, y = torch.tensor(rng.normal(size=(n, 10))), torch.tensor(rng.normal(size=(n, 12)))
    observed, found = _calibrated(x, y, replicates=0, permutations=200)
    for name in NAMES:
        assert found[name]["p_value"].item() > 0.05 and "low" not in found[name]
    # the chance values of the null: k/(n-1) shared neighbours, RSA 0
    assert found["mutual_knn"]["null_mean"].item() == pytest.approx(K / (n - 1), abs=0.01)
    assert found["rsa"]["null_mean"].item() == pytest.approx(0.0, abs=0.01)
    related = x[:, :6] + 0.5 * torch.tensor(rng.normal(size=(n, 6)))
    observed, found = _calibrated(x, related, replicates=40, permutations=200)
    for name in NAMES:
        assert found[name]["p_value"].item() == 1 / 201 and found[name]["low"] < found[name]["high"]
    assert found["rsa"]["low"].item() < observed["rsa"].item() < found["rsa"]["high"].item()


def test_halves_keep_k_so_mutual_knn_replicates_sit_at_the_chance_level_of_half_the_images():
    rng = np.random.default_rng(6)
    n = 80
    x, y = torch.tensor(rng.normal(size=(n, 10))), torch.tensor(rng.normal(size=(n, 12)))
    halves, _ = batch_draws(0, 0, n, 60, 0)
    found = half_replicates([x], [y], ["mutual_knn"], K, halves)["mutual_knn"]
    assert found.mean().item() == pytest.approx(K / (n // 2 - 1), abs=0.01)  # not K / (n - 1) = 0.05


def test_the_same_seed_draws_the_same_halves_and_permutations():
    x, y = torch.tensor(shared_data(50, (8,))[0]), torch.tensor(shared_data(50, (8,), seed=3)[0])
    first, second, other = _calibrated(x, y)[1], _calibrated(x, y)[1], _calibrated(x, y, seed=1)[1]
    for name in NAMES:
        assert all(torch.equal(first[name][key], second[name][key]) for key in first[name])
    assert not torch.equal(first["rsa"]["low"], other["rsa"]["low"])


def test_p_values_count_ties_and_keep_nan():
    null = torch.tensor([[[0.5, 0.1]], [[0.2, 0.3]], [[0.5, 0.0]]])
    observed = torch.tensor([[0.5, float("nan")]])
    p = p_values(null, observed)
    assert p[0, 0].item() == 3 / 4 and p[0, 1].isnan()
