"""The similarity measures against their reference formulas (re-implemented in numpy in similarity_reference.py)
on shared random data, and against known answers."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group, rankdata
from similarity_reference import REFERENCES, cknna, shared_data, svcca

from mimlens.analysis.choices import SIMILARITY_DEFAULTS, check_similarity
from mimlens.analysis.similarity import _ranks, pair_similarity
from mimlens.errors import MimlensError

# Tolerances: the exact formulas agree to rounding (1e-10); the reference CCA goes through a pseudo-inverse
# and a matrix square root of rescaled covariances, so the CCA family is checked to 1e-8.
TOLERANCE = {"mutual_knn": 1e-12, "cknna": 1e-10, "rsa": 1e-10, "procrustes": 1e-10, "svcca": 1e-8, "pwcca": 1e-8}


@pytest.mark.parametrize("measure", list(REFERENCES))
@pytest.mark.parametrize("widths", [(24, 40), (40, 24), (16, 16)])
def test_each_measure_equals_its_reference_formula(measure, widths):
    a, b = shared_data(n=120, widths=widths, seed=sum(widths))
    reference = REFERENCES[measure](a, b, epsilon=0.0) if measure == "svcca" else REFERENCES[measure](a, b)
    value = pair_similarity(a, b, measure)
    assert value == pytest.approx(reference, abs=TOLERANCE[measure])
    # the data are neither alike nor unrelated, so the comparison is not of trivial values
    assert 0.05 < value < 0.95 if measure != "procrustes" else 0.1 < value < 1.5


def test_svcca_with_the_tutorial_epsilon_differs_only_by_the_regularisation():
    a, b = shared_data()
    assert pair_similarity(a, b, "svcca") == pytest.approx(svcca(a, b), abs=1e-7)


def test_cknna_without_the_reference_denominator_guard():
    a, b = shared_data()
    exact = pair_similarity(a, b, "cknna")
    assert exact == pytest.approx(cknna(a, b, eps=0.0), abs=1e-12)
    assert abs(exact - cknna(a, b, eps=1e-6)) > 1e-9  # the repository's 1e-6 moves it; mimlens leaves it out


@pytest.mark.parametrize("measure", list(REFERENCES))
def test_identical_representations(measure):
    a, _ = shared_data()
    expected = 0.0 if measure == "procrustes" else 1.0
    assert pair_similarity(a, a, measure) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("measure", ["procrustes", "svcca", "mutual_knn", "cknna"])
def test_invariant_to_an_orthogonal_transform(measure):
    a, b = shared_data(widths=(24, 30))
    q = ortho_group.rvs(24, random_state=3)
    assert pair_similarity(a @ q, b, measure) == pytest.approx(pair_similarity(a, b, measure), abs=1e-8)
    expected = 0.0 if measure == "procrustes" else 1.0
    assert pair_similarity(a, a @ q, measure) == pytest.approx(expected, abs=1e-7)


def test_pwcca_weights_follow_the_neurons_of_the_smaller_side():
    """α_i sums |projections| over neurons: a rotation of the wider side, and a permutation or sign flip of the
    weighted side's neurons, keep PWCCA; a rotation of the weighted side re-weights the same correlations."""
    a, b = shared_data(widths=(24, 30))
    value = pair_similarity(a, b, "pwcca")
    assert pair_similarity(a, b @ ortho_group.rvs(30, random_state=4), "pwcca") == pytest.approx(value, abs=1e-8)
    flipped = a[:, ::-1] * np.where(np.arange(24) % 2, -1.0, 1.0)
    assert pair_similarity(flipped, b, "pwcca") == pytest.approx(value, abs=1e-8)
    rotated = a @ ortho_group.rvs(24, random_state=3)
    assert abs(pair_similarity(rotated, b, "pwcca") - value) > 1e-4
    assert pair_similarity(rotated, b, "pwcca") == pytest.approx(REFERENCES["pwcca"](rotated, b), abs=1e-8)
    assert pair_similarity(a, a @ ortho_group.rvs(24, random_state=3), "pwcca") == pytest.approx(1.0, abs=1e-8)


def test_procrustes_and_cca_ignore_translation_and_scale():
    a, b = shared_data()
    for measure in ("procrustes", "svcca", "pwcca"):
        moved = 3.5 * a + np.arange(a.shape[1])
        assert pair_similarity(moved, b, measure) == pytest.approx(pair_similarity(a, b, measure), abs=1e-8)


def test_procrustes_of_unrelated_directions_is_a_right_angle():
    x = np.zeros((4, 2))
    x[:, 0] = [1, -1, 1, -1]
    y = np.zeros((4, 2))
    y[:, 0] = [1, 1, -1, -1]
    assert pair_similarity(x, y, "procrustes") == pytest.approx(math.pi / 2, abs=1e-12)


def test_cca_correlates_any_invertible_map_fully():
    a, _ = shared_data(widths=(12, 12))
    mixed = a @ np.random.default_rng(5).normal(size=(12, 12))
    assert pair_similarity(a, mixed, "pwcca") == pytest.approx(1.0, abs=1e-8)
    assert pair_similarity(a, mixed, "procrustes") > 0.05  # Procrustes allows rotations only


def test_ranks_average_ties_as_scipy():
    values = torch.tensor([3.0, 1.0, 3.0, 2.0, 1.0, 3.0, 0.5])
    np.testing.assert_array_equal(_ranks(values).numpy(), rankdata(values.numpy()))


def test_rsa_with_tied_distances_equals_scipy():
    """Rows of two +1 and two -1 are centred and scale to ±0.5 exactly, so their correlation distances are exact
    (0, 0.5, 1, 1.5 or 2) in any order of summation: heavy ties, the same in both implementations."""
    rng = np.random.default_rng(2)
    patterns = np.array([[1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1], [-1, -1, 1, 1], [-1, 1, -1, 1]], float)
    a = patterns[rng.integers(0, len(patterns), size=30)]
    b = rng.normal(size=(30, 5)) + a[:, :1]
    assert pair_similarity(a, b, "rsa") == pytest.approx(REFERENCES["rsa"](a, b), abs=1e-10)


def test_a_constant_feature_vector_leaves_rsa_undefined():
    a, b = shared_data()
    a[3] = 1.0
    assert math.isnan(pair_similarity(a, b, "rsa"))


def test_bad_input_is_one_line():
    a, b = shared_data()
    with pytest.raises(MimlensError, match="measure='cka'"):
        pair_similarity(a, b, "cka")
    with pytest.raises(MimlensError, match="same samples"):
        pair_similarity(a, b[:50], "svcca")
    with pytest.raises(MimlensError, match="k=200 nearest neighbours of 120 images"):
        pair_similarity(a, b, "mutual_knn", k=200)


@pytest.mark.parametrize(("change", "message"), [
    ({"k": 0}, r"analysis\.similarity\.k=0: expected a positive integer"),
    ({"max_images": True}, r"analysis\.similarity\.max_images=True"),
    ({"measures": []}, r"analysis\.similarity\.measures=\[\]"),
    ({"measures": ["svcca", "cca"]}, r"analysis\.similarity\.measures='cca': expected one of"),
    ({"pooled": "max"}, r"analysis\.similarity\.pooled='max'"),
    ({"replicates": -1}, r"analysis\.similarity\.replicates=-1: expected an integer >= 0 \(0 turns it off\)"),
    ({"permutations": 2.5}, r"analysis\.similarity\.permutations=2\.5: expected an integer >= 0"),
    ({"extra": 1}, r"expected a mapping with the keys"),
])
def test_bad_settings_are_one_line(change, message):
    with pytest.raises(MimlensError, match=message) as caught:
        check_similarity({**SIMILARITY_DEFAULTS, **change}, "analysis.similarity")
    assert "\n" not in str(caught.value)


def test_the_image_cap_holds_for_the_full_data_measures_only():
    settings = {**SIMILARITY_DEFAULTS, "max_images": 100}
    with pytest.raises(MimlensError, match="101 images exceed similarity.max_images=100: mutual_knn, cknna, rsa"):
        check_similarity(settings, images=101)
    check_similarity({**settings, "measures": ["svcca", "pwcca", "procrustes"]}, images=10**6)
