"""Verdict rules of mimlens.findings.rules (rules version 3) on hand-made JSON documents: for every rule, inputs
that give each verdict it can give, so that no rule can only pass or only fail."""

import math

import numpy as np
import pytest

from mimlens.findings import rules as fd

PASSED = {"simmim": {"passed": True}, "supervised": {"passed": True}}
FAILED_SIMMIM = {"simmim": {"passed": False}, "supervised": {"passed": True}}


def attention(distances, kls=None, heads=3):
    """An attention.json with one distance (all heads equal) and one head-KL mean per layer."""
    kls = kls or [0.0] * len(distances)
    return {"layers": [{"distance_px": [d] * heads, "head_kl_mean": k} for d, k in zip(distances, kls, strict=True)]}


UNIFORM = attention([33.0] * 6)
LOCAL_SIMMIM = attention([12.0, 14.0, 20.0, 25.0, 26.0, 29.0])  # every layer >= 10 % below 33
GROWING_SUPERVISED = attention([20.0, 24.0, 28.0, 31.0, 32.5, 33.0])  # low layers local, high ones global

# ---------------------------------------------------------------------------------------------- F1


def test_f1_reproduced_when_simmim_is_local_in_every_layer_and_supervised_grows():
    row = fd.f1_locality(LOCAL_SIMMIM, GROWING_SUPERVISED, UNIFORM, PASSED, claims=True)
    assert row["verdict"] == "reproduced"
    n = row["numbers"]
    assert n["SimMIM local layers"] == 6 and n["layers"] == 6
    assert n["supervised lower-half distance px"] == pytest.approx(24.0)
    assert n["supervised upper-half distance px"] == pytest.approx((31 + 32.5 + 33) / 3)
    assert n["supervised growth / random-init distance"] == pytest.approx(((31 + 32.5 + 33) / 3 - 24) / 33)


def test_f1_not_reproduced_when_one_layer_is_not_local_or_supervised_is_flat():
    five = attention([12.0, 14.0, 20.0, 25.0, 26.0, 30.0])  # the last layer 9 % below 33: not local
    row = fd.f1_locality(five, GROWING_SUPERVISED, UNIFORM, PASSED, claims=True)
    assert row["verdict"] == "not reproduced" and row["numbers"]["SimMIM local layers"] == 5
    flat = attention([30.0] * 6)  # no growth from low to high layers
    assert fd.f1_locality(LOCAL_SIMMIM, flat, UNIFORM, PASSED, True)["verdict"] == "not reproduced"


def test_f1_not_judged_below_a_bar_or_in_a_smoke_run():
    row = fd.f1_locality(LOCAL_SIMMIM, GROWING_SUPERVISED, UNIFORM, FAILED_SIMMIM, True)
    assert row["verdict"] == "not judged" and row["numbers"]["reason"] == "training bar not passed: simmim"
    quick = fd.f1_locality(LOCAL_SIMMIM, GROWING_SUPERVISED, UNIFORM, PASSED, claims=False)
    assert quick["verdict"] == "not judged" and quick["numbers"]["reason"] == fd.QUICK_REASON


def test_f1_margin_is_strictly_ten_percent():
    near = attention([29.8] * 6)  # 9.7 % below 33: not local
    at = attention([29.7] * 6)  # exactly 10 % below
    assert fd.f1_locality(near, UNIFORM, UNIFORM, PASSED, True)["numbers"]["SimMIM local layers"] == 0
    assert fd.f1_locality(at, UNIFORM, UNIFORM, PASSED, True)["numbers"]["SimMIM local layers"] == 6


# ---------------------------------------------------------------------------------------------- F2 (AvgDist only)


def test_f2_without_the_study_is_not_judged_and_reports_the_setting_used():
    doc = {"img_size": 64, "moderate_band_px": [2.86, 5.71],
           "settings": [{"mask_patch_size": 8, "ratio": 0.6, "avg_dist_px": 4.1},
                        {"mask_patch_size": 16, "ratio": 0.6, "avg_dist_px": 7.0},
                        {"mask_patch_size": 32, "ratio": 0.9, "avg_dist_px": None}]}
    row = fd.f2_avgdist(doc, 8, 0.6, claims=True)
    assert row["verdict"] == "not judged"
    assert row["numbers"]["pre-training AvgDist px"] == 4.1
    assert row["numbers"]["settings in band"] == 1 and row["numbers"]["settings measured"] == 3
    assert "one pre-training" in row["numbers"]["reason"]


# ---------------------------------------------------------------------------------------------- F3


def test_f3_reproduced_when_supervised_kl_vanishes_in_the_last_three_layers():
    sim = attention([10.0] * 6, kls=[1.0, 1.2, 1.1, 0.9, 0.8, 0.7])
    sup = attention([30.0] * 6, kls=[1.0, 0.8, 0.6, 0.2, 0.1, 0.05])
    row = fd.f3_head_diversity(sim, sup, PASSED, claims=True)
    assert row["verdict"] == "reproduced"
    assert row["numbers"]["supervised ratio"] == pytest.approx((0.35 / 3) / (2.4 / 3))
    assert row["numbers"]["SimMIM ratio"] == pytest.approx((2.4 / 3) / (3.3 / 3))
    assert fd.f3_head_diversity(sup, sim, PASSED, True)["verdict"] == "not reproduced"


def test_f3_not_judged_with_fewer_than_four_layers_or_below_a_bar():
    shallow = attention([10.0] * 3, kls=[1.0, None, 1.0])
    row = fd.f3_head_diversity(shallow, shallow, PASSED, claims=True)
    assert row["verdict"] == "not judged" and "4 layers" in row["numbers"]["reason"]
    assert fd.layer_head_kl(shallow)[1] != fd.layer_head_kl(shallow)[1]  # NaN for a null layer
    deep = attention([10.0] * 6, kls=[1.0] * 6)
    assert fd.f3_head_diversity(deep, deep, FAILED_SIMMIM, True)["verdict"] == "not judged"


# ---------------------------------------------------------------------------------------------- F5


def cka(matrix):
    return {"matrix": matrix, "estimator": "linear"}


def calibrated(off, spread=0.01, noise=0, null=0.1, **keys):
    """A within-model cka.json of two layers with CKA ``off`` between them, 200 half-sample replicates around it
    (sd ``spread``; ``noise`` seeds it) and a permutation null of mean ``null``."""
    replicates = (off + spread * np.random.default_rng(noise).normal(size=200)).tolist()
    return {"matrix": [[1.0, off], [off, 1.0]], "estimator": "linear", "images": 12.5, "num_images": 256,
            "batch_size": 64, "seed": 0, "bootstrap": 200, "permutations": 200,
            "null_mean": [[null, null], [null, null]], "off_diagonal_replicates": replicates, **keys}


def test_f5_version_2_compares_means_against_the_fixed_margin_and_skips_null_cells():
    sim = cka([[1.0, 0.9, None], [0.9, 1.0, 0.8], [None, 0.8, 1.0]])
    sup = cka([[1.0, 0.5, 0.2], [0.5, 1.0, 0.4], [0.2, 0.4, 1.0]])
    assert fd.mean_off_diagonal(sim) == pytest.approx(0.85)
    assert fd.mean_off_diagonal(sup) == pytest.approx((0.5 + 0.2 + 0.4) / 3)
    assert fd.f5_cka_v2(sim, sup, PASSED, True)["verdict"] == "reproduced"
    assert fd.f5_cka_v2(sup, sim, PASSED, True)["verdict"] == "not reproduced"
    assert fd.f5_cka_v2(sim, sup, FAILED_SIMMIM, True)["verdict"] == "not judged"
    assert fd.f5_cka_v2(calibrated(0.86), calibrated(0.83), PASSED, True)["verdict"] == "not reproduced"  # < 0.05
    assert math.isnan(fd.mean_off_diagonal(cka([[1.0]])))


def test_f5_judges_the_percentile_interval_of_the_paired_replicates():
    sim, sup = calibrated(0.86, noise=1, null=0.02), calibrated(0.83, noise=2, null=0.01)
    row = fd.f5_cka(sim, sup, PASSED, True)
    n = row["numbers"]
    differences = np.subtract(sim["off_diagonal_replicates"], sup["off_diagonal_replicates"])
    low, high = np.percentile(differences, [2.5, 97.5])
    assert row["verdict"] == "reproduced" and n["SimMIM - supervised"] == pytest.approx(0.03)
    assert n["SimMIM - supervised low"] == pytest.approx(low) and n["SimMIM - supervised high"] == pytest.approx(high)
    assert 0 < low < 0.03 < high and n["SimMIM - supervised replicates"] == 200
    assert n["SimMIM mean CKA between layers"] == 0.86 and n["supervised mean CKA between layers"] == 0.83
    assert n["SimMIM null mean CKA between layers"] == 0.02 and n["supervised null mean CKA between layers"] == 0.01
    assert fd.f5_cka(sup, sim, PASSED, True)["verdict"] == "not reproduced"


def test_f5_within_errors_when_the_interval_contains_zero_with_the_detectable_difference():
    row = fd.f5_cka(calibrated(0.86, spread=0.05, noise=1), calibrated(0.83, spread=0.05, noise=2), PASSED, True)
    n = row["numbers"]
    assert row["verdict"] == "within errors" and n["SimMIM - supervised low"] < 0 < n["SimMIM - supervised high"]
    width = n["SimMIM - supervised high"] - n["SimMIM - supervised low"]
    assert n["SimMIM - supervised detectable"] == pytest.approx(width / 2 / 1.96 * (1.96 + 0.8416))
    assert "contains 0" in n["reason"] and "detectable difference" in n["reason"]


@pytest.mark.parametrize("change", [{"images": 13.0}, {"num_images": 128}, {"batch_size": 32}, {"seed": 1},
                                    {"bootstrap": 100}, {"off_diagonal_replicates": None}])
def test_f5_not_judged_when_the_two_cka_documents_are_not_paired(change):
    row = fd.f5_cka(calibrated(0.9), calibrated(0.2, **change), PASSED, True)
    assert row["verdict"] == "not judged"
    key = next(iter(change))
    assert (key in row["numbers"]["reason"]) or ("no half-sample replicates" in row["numbers"]["reason"])
    assert row["numbers"]["SimMIM - supervised"] == pytest.approx(0.7)
    assert fd.f5_cka(cka([[1, 0.9], [0.9, 1]]), cka([[1, 0.2], [0.2, 1]]), PASSED, True)["verdict"] == "not judged"


# ---------------------------------------------------------------------------------------------- fine-tunings

SPEC = {"cls": ("top1", True), "depth": ("rmse", False), "pose": ("ap", True), "track": ("suc", True)}


def run(task, values, trained=None):
    """A metrics.json of ``task`` with per-item values (their mean is the primary value)."""
    metric, higher = SPEC[task]
    values = [float(v) for v in values]
    doc = {"primary": {"name": metric, "higher_is_better": higher, "value": float(np.mean(values))},
           "items": {"unit": "image", "ids": list(range(len(values))), "statistic": "mean", "values": values}}
    if trained is not None:
        doc["trained"] = trained
    return doc


def noise(n=200, sd=0.05, seed=0):
    """Per-item noise shared by the runs compared (so paired differences are tight) with mean 0."""
    x = np.random.default_rng(seed).normal(0, sd, n)
    return x - x.mean()


def own(n=200, sd=0.05, seed=1):
    """Per-item noise of one run alone, mean 0."""
    return noise(n, sd, seed)


def sweep(task, ks_values, trained=None):
    """A drop_sweep.json of ``task``: per K, per-item values."""
    metric, higher = SPEC[task]
    rows = [{"drop_last": k, metric: float(np.mean(v))} for k, v in ks_values.items()]
    if trained is not None:
        rows[0]["trained"] = trained
    items = {str(k): run(task, v)["items"] for k, v in ks_values.items()}
    return {"task": task, "metric": metric, "higher_is_better": higher, "rows": rows, "items": items}


def f4(depth_offsets, pose_offsets, depth_random=2.0, pose_random=0.0, bars=PASSED, trained=None, sd=0.01):
    """F4 on depth (RMSE 1 + offset) and pose (AP-like mean 0.5 + offset) with K = 0, 1, ... per offset."""
    base = noise()
    depth = sweep("depth", {k: 1.0 + off + base + own(sd=sd, seed=10 + k) for k, off in enumerate(depth_offsets)},
                  trained)
    pose = sweep("pose", {k: 0.5 + off + base + own(sd=sd, seed=20 + k) for k, off in enumerate(pose_offsets)},
                 trained)
    random_init = {"depth": run("depth", depth_random + base), "pose": run("pose", pose_random + base)}
    return fd.f4_drop_last({"depth": depth, "pose": pose}, random_init, bars, claims=True)


def test_f4_reproduced_when_dropping_helps_on_both_tasks():
    row = f4([0.0, -0.05, 0.02], [0.0, 0.05, 0.01])  # depth: lower RMSE at K = 1; pose: higher at K = 1
    assert row["verdict"] == "reproduced" and row["numbers"]["tasks holding"] == 2
    n = row["numbers"]
    assert n["depth chosen K"] == 1 and n["depth chosen K - K=0 items"] == 100  # chosen among 2 Ks: half judges
    assert n["depth K=1 - K=0"] == pytest.approx(-0.05) and n["depth K=1 - K=0 reading"] == "helps"
    assert n["depth K=2 - K=0 reading"] == "hurts"


def test_f4_not_reproduced_when_dropping_hurts():
    row = f4([0.0, 0.05], [0.0, -0.05])
    assert row["verdict"] == "not reproduced" and row["numbers"]["tasks failing"] == 2
    assert row["numbers"]["depth chosen K - K=0 items"] == 200  # a single K: no choice, all items judge it


def test_f4_within_errors_prints_the_detectable_difference():
    row = f4([0.0, 0.0001], [0.0, -0.0001], sd=0.05)
    n = row["numbers"]
    assert row["verdict"] == "within errors" and n["tasks within errors"] == 2
    se = n["depth chosen K - K=0 SE"]
    assert n["depth chosen K - K=0 detectable"] == pytest.approx((2 + 0.8416) * se)
    assert f"depth (detectable difference {(2 + 0.8416) * se:.3g})" in n["reason"]


def test_f4_not_judged_when_a_task_did_not_learn_or_a_bar_failed():
    # pose's full model no better than the random-init fine-tuning: 1 of 2 tasks judged, more than half needed
    row = f4([0.0, -0.05], [0.0, 0.05], pose_random=0.5)
    assert row["verdict"] == "not judged" and row["numbers"]["tasks judged"] == 1
    assert row["numbers"]["reason"] == ("1 of 2 tasks judged, more than half needed (pose: the full model does not "
                                        "beat the random-init fine-tuning)")
    row = f4([0.0, -0.05], [0.0, 0.05], trained=False)
    assert row["verdict"] == "not judged" and fd.UNTRAINED_REASON in row["numbers"]["reason"]
    assert f4([0.0, -0.05], [0.0, 0.05], bars={"supervised": {"passed": False}})["verdict"] == "not judged"


def test_f4_judges_on_the_other_half_the_k_it_chose():
    # K = 2 best on the selection half only (items at even positions): on the judgement half it is no better
    n, base = 200, noise()
    k2 = 1.0 + base.copy()
    k2[0::2] -= 0.05
    depth = sweep("depth", {0: 1.0 + base, 1: 1.0 + base + 0.01, 2: k2})
    row = fd.f4_drop_last({"depth": depth}, {"depth": run("depth", 2.0 + base)}, PASSED, claims=True)
    assert row["numbers"]["depth chosen K"] == 2 and row["numbers"]["depth chosen K - K=0"] == pytest.approx(0.0)
    assert row["numbers"]["depth chosen K - K=0 items"] == n // 2 and row["numbers"]["depth outcome"] != "holds"


# ---------------------------------------------------------------------------------------------- F6


def f6(offsets, random_offsets=None, trained=None, sd=0.01, bars=PASSED):
    """F6 over the four tasks: SimMIM = supervised + offset (in the better direction when positive)."""
    base = noise()
    docs = {"SimMIM": {}, "supervised": {}, "random init": {}}
    for i, (task, off) in enumerate(offsets.items()):
        higher = SPEC[task][1]
        sign = 1 if higher else -1
        docs["supervised"][task] = run(task, 0.5 + base, trained)
        docs["SimMIM"][task] = run(task, 0.5 + sign * off + base + own(sd=sd, seed=30 + i), trained)
        docs["random init"][task] = run(task, 0.5 - sign * (random_offsets or {}).get(task, 0.2) + base)
    return fd.f6_transfer(docs["SimMIM"], docs["supervised"], docs["random init"], bars, claims=True)


def test_f6_reproduced_when_simmim_beats_supervised_on_most_tasks():
    row = f6({"cls": 0.05, "depth": 0.05, "pose": 0.05, "track": -0.05})
    assert row["verdict"] == "reproduced" and row["numbers"]["tasks holding"] == 3
    assert row["numbers"]["tasks failing"] == 1 and row["numbers"]["track outcome"] == "fails"
    assert row["numbers"]["depth SimMIM - supervised"] == pytest.approx(-0.05)  # lower RMSE: better


def test_f6_not_reproduced_when_supervised_wins_most_tasks():
    row = f6({"cls": -0.05, "depth": -0.05, "pose": -0.05, "track": 0.05})
    assert row["verdict"] == "not reproduced" and row["numbers"]["tasks failing"] == 3


def test_f6_within_errors_when_the_tasks_do_not_decide():
    row = f6({"cls": 0.05, "depth": -0.05, "pose": 0.0, "track": 0.0}, sd=0.05)
    n = row["numbers"]
    assert row["verdict"] == "within errors" and n["tasks judged"] == 4
    assert n["pose outcome"] == "within errors" and "pose (detectable difference" in n["reason"]


def test_f6_not_judged_when_too_few_tasks_qualify():
    # pre-training made no difference on three tasks: one of four judged
    row = f6({"cls": 0.05, "depth": 0.05, "pose": 0.05, "track": 0.05},
             random_offsets={"cls": 0.2, "depth": -0.3, "pose": -0.3, "track": -0.3})
    assert row["verdict"] == "not judged" and row["numbers"]["tasks judged"] == 1
    assert "neither pre-training beats the random-init fine-tuning" in row["numbers"]["reason"]
    row = f6({"cls": 0.05, "depth": 0.05}, trained=False)
    assert row["verdict"] == "not judged" and fd.UNTRAINED_REASON in row["numbers"]["reason"]
    assert f6({"cls": 0.05}, bars=FAILED_SIMMIM)["verdict"] == "not judged"


def test_f6_uses_paired_standard_errors_of_per_item_values():
    # same mean gap 0.25 both times: consistent per-image differences hold, noisy ones are within errors
    rand = {"cls": run("cls", [0.0] * 8)}
    sup = {"cls": run("cls", [0.5] * 8)}
    steady = {"cls": run("cls", [0.75, 0.7, 0.8, 0.75, 0.75, 0.7, 0.8, 0.75])}
    row = fd.f6_transfer(steady, sup, rand, PASSED, claims=True)
    d = np.array([0.25, 0.2, 0.3, 0.25, 0.25, 0.2, 0.3, 0.25])
    assert row["numbers"]["cls SimMIM - supervised"] == pytest.approx(0.25)
    assert row["numbers"]["cls SimMIM - supervised SE"] == pytest.approx(d.std(ddof=1) / np.sqrt(8))
    assert row["numbers"]["cls outcome"] == "holds" and row["verdict"] == "reproduced"
    noisy = {"cls": run("cls", [1.5, 0.0, 1.5, 0.0, 1.5, 0.0, 1.5, 0.0])}
    assert fd.f6_transfer(noisy, sup, rand, PASSED, claims=True)["numbers"]["cls outcome"] == "within errors"


# ---------------------------------------------------------------------------------------------- frozen probes

PROBE_SPEC = {"depth": ("rmse", False), "pose": ("ap", True), "track": ("suc", True)}


def probe_doc(curves, noise_sd=0.0, items=8, seed=0):
    """A probe.json: per task, one row per block whose per-item values are the curve's value plus noise
    (0: the same offsets for every block, so paired differences have SE 0; else independent per block, centred
    so that each block's mean is exactly the curve's value)."""
    shared = np.linspace(-0.05, 0.05, items)
    tasks = {}
    for task, curve in curves.items():
        metric, higher = PROBE_SPEC[task]
        rows = []
        for block, value in enumerate(curve):
            offsets = np.random.default_rng([seed, block]).normal(0, noise_sd, items) if noise_sd else shared
            offsets = offsets - offsets.mean()
            rows.append({"block": block, "name": f"blocks.{block}", "stage": 0, metric: value,
                         "values": (value + offsets).tolist()})
        tasks[task] = {"primary": metric, "higher_is_better": higher, "rows": rows,
                       "items": {"unit": "image", "ids": list(range(items)), "statistic": "mean"}}
    return {"tasks": tasks}


PEAKED = {"depth": [1.2, 1.0, 1.1, 1.4], "pose": [0.2, 0.5, 0.4, 0.3], "track": [0.3, 0.5, 0.45, 0.35]}
RISING = {"depth": [1.2, 1.0, 0.9, 0.8], "pose": [0.2, 0.4, 0.5, 0.6], "track": [0.3, 0.5, 0.6, 0.7]}
FLAT = {"depth": [1.0] * 4, "pose": [0.5] * 4, "track": [0.5] * 4}


def test_f4_probe_reproduced_when_supervised_peaks_early_and_simmim_keeps_rising():
    row = fd.f4_probe(probe_doc(RISING), probe_doc(PEAKED), PASSED, claims=True)
    n = row["numbers"]
    assert row["verdict"] == "reproduced" and n["tasks holding"] == 3
    assert n["depth supervised chosen block"] == 1 and n["depth supervised chosen rmse"] == 1.0
    assert n["depth supervised last rmse"] == 1.4 and n["depth supervised earlier - last items"] == 4
    assert n["depth supervised earlier - last"] == pytest.approx(-0.4)
    assert n["pose SimMIM chosen block"] == 2 and n["pose SimMIM earlier - last"] == pytest.approx(-0.1)
    assert row["table"]["columns"] == ["depth rmse", "pose ap", "track suc"]


def test_f4_probe_not_reproduced_when_the_roles_swap():
    row = fd.f4_probe(probe_doc(PEAKED), probe_doc(RISING), PASSED, claims=True)
    assert row["verdict"] == "not reproduced" and row["numbers"]["depth outcome"] == "fails"
    assert row["numbers"]["depth supervised part"] == "fails" and row["numbers"]["depth SimMIM part"] == "fails"


def test_f4_probe_within_errors_and_not_judged():
    row = fd.f4_probe(probe_doc(RISING), probe_doc(PEAKED, noise_sd=2.0), PASSED, claims=True)
    assert row["numbers"]["depth outcome"] == "within errors" and row["numbers"]["tasks within errors"] == 3
    assert row["verdict"] == "within errors" and row["numbers"]["reason"].startswith("within errors: depth (")
    gated = fd.f4_probe(probe_doc(RISING), probe_doc(PEAKED), FAILED_SIMMIM, claims=True)
    assert gated["verdict"] == "not judged" and gated["numbers"]["reason"] == "training bar not passed: simmim"
    assert "depth supervised chosen block" in gated["numbers"]  # the numbers are still shown
    one = {"depth": [1.0], "pose": [0.5], "track": [0.5]}
    assert fd.f4_probe(probe_doc(one), probe_doc(one), PASSED, True)["verdict"] == "not judged"


def test_f4_probe_gives_a_peak_and_a_rise_of_the_same_size_the_same_verdict():
    # 256 items, per-item noise 0.01: supervised's block 2 better than its last by 1e-4 RMSE, or its last
    # better than block 2 by 1e-4; the other blocks far worse. SimMIM rising steadily.
    early = {"depth": [1.2, 1.1, 1.0, 1.0001]}
    late = {"depth": [1.2, 1.1, 1.0001, 1.0]}
    sim = probe_doc({"depth": [1.2, 1.0, 0.9, 0.8]}, noise_sd=0.01, items=256)
    rows = [fd.f4_probe(sim, probe_doc(curve, noise_sd=0.01, items=256), PASSED, True) for curve in (early, late)]
    assert [r["numbers"]["depth supervised chosen block"] for r in rows] == [2, 2]
    assert [r["numbers"]["depth outcome"] for r in rows] == ["within errors", "within errors"]
    assert rows[0]["verdict"] == rows[1]["verdict"] == "within errors"


def test_f6_probe_each_verdict():
    row = fd.f6_probe(probe_doc(RISING), probe_doc(PEAKED), PASSED, claims=True)
    n = row["numbers"]
    assert row["verdict"] == "reproduced" and n["tasks holding"] == 3
    assert n["depth SimMIM best block"] == 3 and n["depth supervised best block"] == 1
    assert n["depth SimMIM - supervised at best"] == pytest.approx(0.8 - 1.0)
    assert n["track SimMIM - supervised at last"] == pytest.approx(0.7 - 0.35)
    assert n["depth SimMIM - supervised at last items"] == 8 and n["depth SimMIM - supervised at best items"] == 4
    swapped = fd.f6_probe(probe_doc(PEAKED), probe_doc(RISING), PASSED, claims=True)
    assert swapped["verdict"] == "not reproduced" and swapped["numbers"]["tasks failing"] == 3
    noisy = fd.f6_probe(probe_doc(FLAT, noise_sd=2.0), probe_doc(FLAT, noise_sd=2.0, seed=1), PASSED, True)
    assert noisy["verdict"] == "within errors" and noisy["numbers"]["reason"].startswith("within errors")
    quick = fd.f6_probe(probe_doc(RISING), probe_doc(PEAKED), PASSED, claims=False)
    assert quick["verdict"] == "not judged" and quick["numbers"]["reason"] == fd.QUICK_REASON


def equal_blocks(draws, blocks=12, items=256, sd=0.01, seed=0):
    """``draws`` probe tasks (depth RMSE) whose blocks are all equally good: independent per-item noise."""
    values = 1.0 + np.random.default_rng(seed).normal(0, sd, (draws, blocks, items))
    return [{"primary": "rmse", "higher_is_better": False,
             "items": {"unit": "image", "ids": list(range(items)), "statistic": "mean"},
             "rows": [{"block": b, "rmse": float(v.mean()), "values": v.tolist()} for b, v in enumerate(draw)]}
            for draw in values]


def test_a_block_chosen_apart_from_its_judges_shows_no_advantage_where_there_is_none():
    from mimlens.findings.judging import paired, reading

    tasks = equal_blocks(100)
    apart = sum(reading(fd.earlier_against_last(task)[1], False) == "within errors" for task in tasks)
    assert apart >= 90
    # the same choice made and judged on the same items finds an advantage far more often
    same = sum(reading(paired(fd.probe_items(t, fd.best_row({**t, "rows": t["rows"][:-1]})),
                              fd.probe_items(t, t["rows"][-1])), False) == "within errors" for t in tasks)
    assert same < apart


def test_every_row_renders_in_the_report_table():
    from mimlens.report.html import findings_table

    rows = [fd.f1_locality(LOCAL_SIMMIM, GROWING_SUPERVISED, UNIFORM, PASSED, True),
            fd.f5_cka(cka([[1, 0.9], [0.9, 1]]), cka([[1, 0.2], [0.2, 1]]), PASSED, False),
            fd.f4_probe(probe_doc(RISING), probe_doc(PEAKED, noise_sd=2.0), PASSED, True),
            fd.f6_probe(probe_doc(RISING), probe_doc(PEAKED), PASSED, True)]
    page = findings_table(rows)
    assert 'class="verdict reproduced"' in page and 'class="verdict not-judged"' in page
    assert 'class="verdict within-errors"' in page and fd.QUICK_REASON in page
    assert "F4-probe" in page and "supervised chosen - last SE" in page and "detectable difference" in page


# ---------------------------------------------------------------------------------------------- every verdict

SIM_KL = attention([10.0] * 6, kls=[1.0, 1.2, 1.1, 0.9, 0.8, 0.7])
SUP_KL = attention([30.0] * 6, kls=[1.0, 0.8, 0.6, 0.2, 0.1, 0.05])
CKA_HIGH, CKA_LOW = calibrated(0.9, noise=1), calibrated(0.2, noise=2)
CASES = {  # (rule, verdict): a row computed from hand-made JSON that should get that verdict
    ("F1", "reproduced"): lambda: fd.f1_locality(LOCAL_SIMMIM, GROWING_SUPERVISED, UNIFORM, PASSED, True),
    ("F1", "not reproduced"): lambda: fd.f1_locality(GROWING_SUPERVISED, LOCAL_SIMMIM, UNIFORM, PASSED, True),
    ("F1", "not judged"): lambda: fd.f1_locality(LOCAL_SIMMIM, GROWING_SUPERVISED, UNIFORM, FAILED_SIMMIM, True),
    ("F3", "reproduced"): lambda: fd.f3_head_diversity(SIM_KL, SUP_KL, PASSED, True),
    ("F3", "not reproduced"): lambda: fd.f3_head_diversity(SUP_KL, SIM_KL, PASSED, True),
    ("F3", "not judged"): lambda: fd.f3_head_diversity(SIM_KL, SUP_KL, PASSED, False),
    ("F4", "reproduced"): lambda: f4([0.0, -0.05], [0.0, 0.05]),
    ("F4", "not reproduced"): lambda: f4([0.0, 0.05], [0.0, -0.05]),
    ("F4", "within errors"): lambda: f4([0.0, 0.0001], [0.0, -0.0001], sd=0.05),
    ("F4", "not judged"): lambda: f4([0.0, -0.05], [0.0, 0.05], pose_random=0.5),
    ("F5", "reproduced"): lambda: fd.f5_cka(CKA_HIGH, CKA_LOW, PASSED, True),
    ("F5", "not reproduced"): lambda: fd.f5_cka(CKA_LOW, CKA_HIGH, PASSED, True),
    ("F5", "within errors"): lambda: fd.f5_cka(calibrated(0.5, 0.05, noise=1), calibrated(0.5, 0.05, noise=2), PASSED,
                                              True),
    ("F5", "not judged"): lambda: fd.f5_cka(CKA_HIGH, CKA_LOW, FAILED_SIMMIM, True),
    ("F6", "reproduced"): lambda: f6({"cls": 0.05, "depth": 0.05, "pose": 0.05}),
    ("F6", "not reproduced"): lambda: f6({"cls": -0.05, "depth": -0.05, "pose": -0.05}),
    ("F6", "within errors"): lambda: f6({"cls": 0.0, "depth": 0.0, "pose": 0.0}, sd=0.05),
    ("F6", "not judged"): lambda: f6({"cls": 0.05, "depth": 0.05}, trained=False),
    ("F4-probe", "reproduced"): lambda: fd.f4_probe(probe_doc(RISING), probe_doc(PEAKED), PASSED, True),
    ("F4-probe", "not reproduced"): lambda: fd.f4_probe(probe_doc(PEAKED), probe_doc(RISING), PASSED, True),
    ("F4-probe", "within errors"): lambda: fd.f4_probe(probe_doc(RISING), probe_doc(PEAKED, 2.0), PASSED, True),
    ("F4-probe", "not judged"): lambda: fd.f4_probe(probe_doc(RISING), probe_doc(PEAKED), FAILED_SIMMIM, True),
    ("F6-probe", "reproduced"): lambda: fd.f6_probe(probe_doc(RISING), probe_doc(PEAKED), PASSED, True),
    ("F6-probe", "not reproduced"): lambda: fd.f6_probe(probe_doc(PEAKED), probe_doc(RISING), PASSED, True),
    ("F6-probe", "within errors"): lambda: fd.f6_probe(probe_doc(FLAT, 2.0), probe_doc(FLAT, 2.0, seed=1), PASSED,
                                                       True),
    ("F6-probe", "not judged"): lambda: fd.f6_probe(probe_doc(RISING), probe_doc(PEAKED), PASSED, False),
}  # F2's four verdicts: tests/demo/test_demo_masking.py; F1 and F3 have no SE, so no "within errors"


@pytest.mark.parametrize(("rule", "verdict"), list(CASES), ids=[f"{r}-{v}" for r, v in CASES])
def test_each_rule_gives_each_of_its_verdicts(rule, verdict):
    row = CASES[rule, verdict]()
    assert row["id"] == rule and row["verdict"] == verdict
    assert ("reason" in row["numbers"]) == (verdict in ("within errors", "not judged"))


def test_one_item_to_judge_on_has_no_standard_error_and_stays_within_errors():
    # two items: the block is chosen on one and judged on the other, whose SE is undefined
    row = fd.f6_probe(probe_doc(RISING, items=2), probe_doc(PEAKED, items=2), PASSED, True)
    n = row["numbers"]
    assert n["depth SimMIM - supervised at best items"] == 1 and math.isnan(n["depth SimMIM - supervised at best SE"])
    assert n["depth SimMIM - supervised at last SE"] == 0.0 and n["depth outcome"] == "within errors"
