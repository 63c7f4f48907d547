"""Standard errors and paired comparisons against brute-force bootstraps and hand-made cases."""

import numpy as np
import pytest

from mimlens.errors import MimlensError
from mimlens.tasks.uncertainty import (
    beats,
    bootstrap_se,
    compare,
    detectable,
    judge,
    paired_bootstrap,
    paired_difference,
    split_items,
    standard_error,
    summary,
    trained_check,
)


def brute_bootstrap_se(a, b, statistic, draws=20000, seed=123):
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a), np.asarray(b)
    diffs = []
    for _ in range(draws):
        i = rng.integers(0, len(a), len(a))
        diffs.append(statistic(a[i]) - statistic(b[i]))
    return float(np.std(diffs))


def test_paired_difference_is_the_mean_difference_with_sd_over_root_n():
    a, b = [3.0, 5.0, 4.0, 8.0], [1.0, 2.0, 4.0, 4.0]
    d = np.array([2.0, 3.0, 0.0, 4.0])
    found = paired_difference(a, b)
    assert found["diff"] == pytest.approx(2.25) and found["n"] == 4
    assert found["se"] == pytest.approx(np.sqrt(((d - d.mean()) ** 2).sum() / 3) / 2)


def test_paired_se_agrees_with_a_brute_force_bootstrap():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    b = a + rng.normal(0.1, 0.5, size=200)
    assert paired_difference(a, b)["se"] == pytest.approx(brute_bootstrap_se(a, b, np.mean), rel=0.05)


def test_paired_bootstrap_of_a_median_agrees_with_a_brute_force_bootstrap():
    rng = np.random.default_rng(1)
    a = rng.exponential(size=150)
    b = a * rng.uniform(0.5, 1.5, size=150)
    found = paired_bootstrap(list(a), list(b), lambda v: float(np.median(v)))
    assert found["diff"] == pytest.approx(np.median(a) - np.median(b)) and found["n"] == 150
    assert found["se"] == pytest.approx(brute_bootstrap_se(a, b, np.median), rel=0.1)
    assert paired_bootstrap(list(a), list(b), lambda v: float(np.median(v)))["se"] == found["se"]  # fixed seed


def test_bootstrap_se_of_a_mean_is_about_sd_over_root_n():
    x = np.random.default_rng(2).normal(size=300)
    assert bootstrap_se(list(x), lambda v: float(np.mean(v))) == pytest.approx(standard_error(x), rel=0.08)


def test_beats_needs_more_than_two_standard_errors():
    assert beats([1, 1, 1, 1], [0, 0, 0, 0], True)  # SE 0, difference 1
    assert not beats([0, 0, 0, 0], [1, 1, 1, 1], True)
    assert beats([0, 0, 0, 0], [1, 1, 1, 1], False)  # lower is better
    # differences 1, 0, 1, 0: mean 0.5, SE = sqrt(1/3)/2 = 0.289; 0.5 < 2 SE
    assert not beats([1, 0, 1, 0], [0, 0, 0, 0], True)
    # differences 2, 1.9, 2.1, 2: mean 2, SE 0.041
    assert beats([2, 1.9, 2.1, 2], [0, 0, 0, 0], True)


def test_missing_items_are_left_out_of_both_sides():
    found = compare([1.0, None, 3.0], [0.0, 5.0, 1.0])
    assert found["n"] == 2 and found["diff"] == pytest.approx(1.5)
    assert summary([2.0, None, 4.0])["value"] == pytest.approx(3.0)


def test_trained_compares_with_the_best_baseline():
    model = [0.9, 0.8, 0.9, 1.0]
    baselines = {"weak": [0.1, 0.2, 0.1, 0.1], "strong": [0.9, 0.8, 0.9, 0.9]}
    check = trained_check(model, baselines, {"weak": 0.125, "strong": 0.875}, True)
    assert check["baseline"] == "strong" and check["diff"] == pytest.approx(0.025) and not check["trained"]
    assert trained_check(model, {"weak": baselines["weak"]}, {"weak": 0.125}, True)["trained"]


def random_keypoint_records(rng, n, thresholds=10):
    """Per-image COCOeval records: 0-3 detections with distinct random scores, random matches and ignores."""
    records = []
    for image_id in range(n):
        k = int(rng.integers(0, 4))
        records.append({"image_id": image_id, "scores": sorted(rng.uniform(size=k).tolist(), reverse=True),
                        "matched": (rng.uniform(size=(thresholds, k)) < 0.5).astype(int).tolist(),
                        "ignored": (rng.uniform(size=(thresholds, k)) < 0.1).astype(int).tolist(),
                        "positives": int(rng.integers(0, 3))})
    return records


def test_vectorised_keypoint_ap_of_resamples_equals_the_ap_of_each_resample():
    from mimlens.tasks.pose import keypoint_ap, keypoint_ap_resampled
    from mimlens.tasks.uncertainty import resampled_counts, resampled_indices

    records = random_keypoint_records(np.random.default_rng(3), 40)
    counts, draws = resampled_counts(40, 30, seed=4), resampled_indices(40, 30, seed=4)
    expected = [keypoint_ap([records[i] for i in np.sort(draw)]) for draw in draws]
    assert keypoint_ap_resampled(records, counts) == pytest.approx(expected, abs=1e-12)
    assert keypoint_ap_resampled(records, np.ones((1, 40))) == pytest.approx([keypoint_ap(records)], abs=1e-12)


def test_keypoint_ap_bootstrap_se_agrees_with_a_brute_force_bootstrap():
    from mimlens.tasks.pose import keypoint_ap
    from mimlens.tasks.uncertainty import statistic

    records = random_keypoint_records(np.random.default_rng(5), 60)
    rng = np.random.default_rng(6)
    brute = [keypoint_ap([records[i] for i in np.sort(rng.integers(0, 60, 60))]) for _ in range(3000)]
    assert bootstrap_se(records, statistic("keypoint_ap")) == pytest.approx(np.std(brute), rel=0.1)


def test_judge_uses_one_level_in_both_directions():
    assert judge({"diff": 0.21, "se": 0.1}, higher_is_better=True) == "better"
    assert judge({"diff": -0.21, "se": 0.1}, higher_is_better=True) == "worse"
    assert judge({"diff": 0.2, "se": 0.1}, higher_is_better=True) == "within errors"  # exactly 2 SE: not beyond
    assert judge({"diff": -0.21, "se": 0.1}, higher_is_better=False) == "better"  # lower is better
    assert judge({"diff": 0.21, "se": 0.1}, higher_is_better=False) == "worse"


def test_detectable_difference_is_found_eighty_percent_of_the_time():
    assert detectable(0.1) == pytest.approx(0.28416)
    # a true difference of detectable(se) on normal estimates with that SE beats 2 SE in 80 % of draws
    rng = np.random.default_rng(0)
    found = rng.normal(detectable(1.0), 1.0, 200_000) > 2.0
    assert found.mean() == pytest.approx(0.80, abs=0.005)


def test_split_items_takes_alternate_positions():
    items = {"unit": "image", "ids": [10, 11, 12, 13, 14], "statistic": "mean", "values": [0.0, 1.0, 2.0, 3.0, 4.0]}
    assert split_items(items, "selection") == {**items, "ids": [10, 12, 14], "values": [0.0, 2.0, 4.0]}
    assert split_items(items, "judgement") == {**items, "ids": [11, 13], "values": [1.0, 3.0]}
    with pytest.raises(MimlensError, match="selection"):
        split_items(items, "train")
