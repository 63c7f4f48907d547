"""Verdict rules of mimlens.demo.findings on hand-made JSON documents."""

import math

import numpy as np
import pytest

from mimlens.demo import findings as fd

PASSED = {"simmim": {"passed": True}, "supervised": {"passed": True}}
FAILED_SIMMIM = {"simmim": {"passed": False}, "supervised": {"passed": True}}


def attention(distances, kls=None, heads=3):
    """An attention.json with one distance (all heads equal) and one head-KL mean per layer."""
    kls = kls or [0.0] * len(distances)
    return {"layers": [{"distance_px": [d] * heads, "head_kl_mean": k} for d, k in zip(distances, kls, strict=True)]}


UNIFORM = attention([33.0] * 6)
LOCAL_SIMMIM = attention([12.0, 14.0, 20.0, 25.0, 26.0, 30.0])  # 5 of 6 layers >= 10 % below 33
GLOBAL_SUPERVISED = attention([20.0, 28.0, 31.0, 32.5, 33.0, 33.0])


def test_f1_reproduced_with_local_simmim_and_global_supervised_top():
    row = fd.f1_locality(LOCAL_SIMMIM, GLOBAL_SUPERVISED, UNIFORM, PASSED, claims=True)
    assert row["verdict"] == "reproduced"
    n = row["numbers"]
    assert n["SimMIM local layers"] == 5
    assert n["SimMIM mean distance px"] == pytest.approx((12 + 14 + 20 + 25 + 26 + 30) / 6)
    # upper half = layers 3, 4, 5: gaps (33 - d) / 33
    assert n["SimMIM upper-half gap to uniform"] == pytest.approx(((33 - 25) + (33 - 26) + (33 - 30)) / 3 / 33)
    assert n["supervised upper-half gap to uniform"] == pytest.approx((0.5 + 0 + 0) / 3 / 33)


def test_f1_not_reproduced_when_roles_swap_and_inconclusive_without_bars():
    assert fd.f1_locality(GLOBAL_SUPERVISED, LOCAL_SIMMIM, UNIFORM, PASSED, True)["verdict"] == "not reproduced"
    row = fd.f1_locality(LOCAL_SIMMIM, GLOBAL_SUPERVISED, UNIFORM, FAILED_SIMMIM, True)
    assert row["verdict"] == "inconclusive" and row["numbers"]["reason"] == "training bar not passed: simmim"
    quick = fd.f1_locality(LOCAL_SIMMIM, GLOBAL_SUPERVISED, UNIFORM, PASSED, claims=False)
    assert quick["verdict"] == "inconclusive" and quick["numbers"]["reason"] == fd.QUICK_REASON


def test_f1_margin_is_strictly_ten_percent():
    near = attention([29.8] * 6)  # 9.7 % below 33: not local
    at = attention([29.7] * 6)  # exactly 10 % below
    assert fd.f1_locality(near, UNIFORM, UNIFORM, PASSED, True)["numbers"]["SimMIM local layers"] == 0
    assert fd.f1_locality(at, UNIFORM, UNIFORM, PASSED, True)["numbers"]["SimMIM local layers"] == 6


def test_f2_is_inconclusive_and_reports_the_setting_used():
    doc = {"img_size": 64, "moderate_band_px": [2.86, 5.71],
           "settings": [{"mask_patch_size": 8, "ratio": 0.6, "avg_dist_px": 4.1},
                        {"mask_patch_size": 16, "ratio": 0.6, "avg_dist_px": 7.0},
                        {"mask_patch_size": 32, "ratio": 0.9, "avg_dist_px": None}]}
    row = fd.f2_avgdist(doc, 8, 0.6, claims=True)
    assert row["verdict"] == "inconclusive"
    assert row["numbers"]["pre-training AvgDist px"] == 4.1
    assert row["numbers"]["settings in band"] == 1 and row["numbers"]["settings measured"] == 3
    assert "one pre-training" in row["numbers"]["reason"]


def test_f3_supervised_kl_vanishing_in_last_three_layers():
    sim = attention([10.0] * 6, kls=[1.0, 1.2, 1.1, 0.9, 0.8, 0.7])
    sup = attention([30.0] * 6, kls=[1.0, 0.8, 0.6, 0.2, 0.1, 0.05])
    row = fd.f3_head_diversity(sim, sup, PASSED, claims=True)
    assert row["verdict"] == "reproduced"
    assert row["numbers"]["supervised ratio"] == pytest.approx((0.35 / 3) / (2.4 / 3))
    assert row["numbers"]["SimMIM ratio"] == pytest.approx((2.4 / 3) / (3.3 / 3))
    assert fd.f3_head_diversity(sup, sim, PASSED, True)["verdict"] == "not reproduced"


def test_f3_needs_four_layers_and_skips_null_kl():
    shallow = attention([10.0] * 3, kls=[1.0, None, 1.0])
    row = fd.f3_head_diversity(shallow, shallow, PASSED, claims=True)
    assert row["verdict"] == "inconclusive" and "4 layers" in row["numbers"]["reason"]
    assert fd.layer_head_kl(shallow)[1] != fd.layer_head_kl(shallow)[1]  # NaN for a null layer


def sweep(task, metric, higher, values):
    return {"task": task, "metric": metric, "higher_is_better": higher,
            "rows": [{"drop_last": k, metric: v} for k, v in enumerate(values)]}


def test_f4_tolerances_relative_rmse_absolute_ap():
    random_init = metrics(depth=1.2, pose=0.1)
    ok = {"depth": sweep("depth", "rmse", False, [1.00, 1.04, 1.3]), "pose": sweep("pose", "ap", True, [0.5, 0.49])}
    row = fd.f4_drop_last(ok, random_init, PASSED, claims=True)
    assert row["verdict"] == "reproduced"
    assert row["numbers"]["depth rmse K=2"] == 1.3 and row["numbers"]["pose ap random init"] == 0.1
    worse = {"depth": sweep("depth", "rmse", False, [1.00, 1.06]), "pose": sweep("pose", "ap", True, [0.5, 0.49])}
    assert fd.f4_drop_last(worse, random_init, PASSED, True)["verdict"] == "not reproduced"
    pose_worse = {"pose": sweep("pose", "ap", True, [0.5, 0.47])}
    assert fd.f4_drop_last(pose_worse, random_init, PASSED, True)["verdict"] == "not reproduced"
    assert fd.f4_drop_last(ok, random_init, {"supervised": {"passed": False}}, True)["verdict"] == "inconclusive"


def test_f4_judges_only_tasks_where_the_full_model_beats_random_init():
    # pose: AP 0.0002 against 0.0001, within the 0.01 margin, so dropping blocks cannot be judged on pose (even
    # though the pose row with a block dropped is far worse); depth is judged alone
    chance = {"depth": sweep("depth", "rmse", False, [1.00, 1.00]), "pose": sweep("pose", "ap", True, [2e-4, 1e-6])}
    row = fd.f4_drop_last(chance, metrics(depth=1.5, pose=1e-4), PASSED, claims=True)
    assert row["verdict"] == "reproduced" and row["numbers"]["tasks judged"] == 1
    # no task judged: inconclusive, naming the tasks
    row = fd.f4_drop_last({"pose": chance["pose"]}, metrics(pose=1e-4), PASSED, claims=True)
    assert row["verdict"] == "inconclusive" and row["numbers"]["tasks judged"] == 0
    assert row["numbers"]["reason"] == ("no task judged: the supervised fine-tuning does not beat the random-init "
                                        "one on pose")


def cka(matrix):
    return {"matrix": matrix, "estimator": "linear"}


def test_f5_mean_off_diagonal_skips_null_cells():
    sim = cka([[1.0, 0.9, None], [0.9, 1.0, 0.8], [None, 0.8, 1.0]])
    sup = cka([[1.0, 0.5, 0.2], [0.5, 1.0, 0.4], [0.2, 0.4, 1.0]])
    assert fd.mean_off_diagonal(sim) == pytest.approx(0.85)
    assert fd.mean_off_diagonal(sup) == pytest.approx((0.5 + 0.2 + 0.4) / 3)
    assert fd.f5_cka(sim, sup, PASSED, True)["verdict"] == "reproduced"
    assert fd.f5_cka(sup, sim, PASSED, True)["verdict"] == "not reproduced"
    assert math.isnan(fd.mean_off_diagonal(cka([[1.0]])))


def metrics(**values):
    spec = {"cls": ("top1", True), "depth": ("rmse", False), "pose": ("ap", True), "track": ("suc", True)}
    return {t: {"primary": {"name": spec[t][0], "higher_is_better": spec[t][1], "value": v}} for t, v in values.items()}


def test_f6_counts_wins_with_margins():
    sup = metrics(cls=0.30, depth=1.00, pose=0.20, track=0.40)
    rand = metrics(cls=0.05, depth=1.50, pose=0.01, track=0.20)
    three = metrics(cls=0.35, depth=0.95, pose=0.25, track=0.405)  # track within the 0.01 margin: no win
    row = fd.f6_transfer(three, sup, rand, PASSED, claims=True)
    assert row["verdict"] == "reproduced" and row["numbers"]["SimMIM wins"] == 3
    assert row["numbers"]["depth rmse SimMIM"] == 0.95 and row["numbers"]["tasks counted"] == 4
    two = metrics(cls=0.35, depth=0.99, pose=0.25, track=0.40)  # depth within 2 % relative: no win
    mixed = fd.f6_transfer(two, sup, rand, PASSED, True)
    assert mixed["verdict"] == "inconclusive" and mixed["numbers"]["SimMIM wins"] == 2
    one = metrics(cls=0.35, depth=1.10, pose=0.10, track=0.30)
    assert fd.f6_transfer(one, sup, rand, PASSED, True)["verdict"] == "not reproduced"


def test_top1_margin_is_two_standard_errors_of_the_difference():
    # 6.45 % vs 4.10 % on 512 images: SE of the difference sqrt((.0645·.9355 + .041·.959) / 512) = 0.01395
    assert not fd.beats("top1", True, 0.0645, 0.041, num_images=512)  # 0.0235 < 2 SE = 0.0279
    assert fd.beats("top1", True, 0.0645, 0.041, num_images=5000)  # 2 SE = 0.0089: WIN_MARGIN 0.01 decides
    assert not fd.beats("top1", True, 0.0505, 0.041, num_images=10**6)  # 0.0095 < WIN_MARGIN
    assert fd.beats("top1", True, 0.0645, 0.041)  # no image count: WIN_MARGIN alone


def test_f6_top1_needs_more_than_sampling_noise():
    def cls(value, num_images):
        doc = metrics(cls=value)["cls"]
        doc["variant"] = {"num_images": num_images}
        return {"cls": doc}

    row = fd.f6_transfer(cls(0.035, 512), cls(0.0645, 512), cls(0.041, 512), PASSED, claims=True)
    assert row["numbers"]["cls evaluation images"] == 512 and row["numbers"]["tasks counted"] == 0
    row = fd.f6_transfer(cls(0.035, 5000), cls(0.0645, 5000), cls(0.041, 5000), PASSED, claims=True)
    assert row["numbers"]["tasks counted"] == 1 and row["verdict"] == "not reproduced"


def test_f6_counts_only_tasks_where_pre_training_beat_random_init():
    sup = metrics(cls=0.30, depth=1.00, pose=0.0002, track=0.40)
    sim = metrics(cls=0.35, depth=0.95, pose=0.0003, track=0.30)
    rand = metrics(cls=0.05, depth=1.50, pose=0.0001, track=0.45)  # pose at chance; track: neither beats it
    row = fd.f6_transfer(sim, sup, rand, PASSED, claims=True)
    assert row["numbers"]["tasks counted"] == 2 and row["numbers"]["SimMIM wins"] == 2
    assert row["verdict"] == "reproduced"
    nothing = fd.f6_transfer(sim, sup, metrics(cls=0.9, depth=0.1, pose=0.9, track=0.9), PASSED, True)
    assert nothing["verdict"] == "inconclusive" and "no task's fine-tuning" in nothing["numbers"]["reason"]


def test_every_row_renders_in_the_report_table():
    from mimlens.report.html import findings_table

    rows = [fd.f1_locality(LOCAL_SIMMIM, GLOBAL_SUPERVISED, UNIFORM, PASSED, True),
            fd.f5_cka(cka([[1, 0.9], [0.9, 1]]), cka([[1, 0.2], [0.2, 1]]), PASSED, False)]
    html = findings_table(rows)
    assert "reproduced" in html and fd.QUICK_REASON in html


def with_items(doc, values):
    """A metrics.json with per-image values whose mean is the primary value."""
    return {**doc, "items": {"unit": "image", "ids": list(range(len(values))), "statistic": "mean",
                             "values": values}}


def test_f6_uses_paired_standard_errors_of_per_item_values():
    # same mean gap 0.25 both times: consistent per-image differences win, noisy ones do not
    rand = {"cls": with_items(metrics(cls=0.0)["cls"], [0.0] * 8)}
    sup = {"cls": with_items(metrics(cls=0.5)["cls"], [0.5] * 8)}
    steady = {"cls": with_items(metrics(cls=0.75)["cls"], [0.75, 0.7, 0.8, 0.75, 0.75, 0.7, 0.8, 0.75])}
    row = fd.f6_transfer(steady, sup, rand, PASSED, claims=True)
    d = np.array([0.25, 0.2, 0.3, 0.25, 0.25, 0.2, 0.3, 0.25])
    assert row["numbers"]["cls SimMIM - supervised"] == pytest.approx(0.25)
    assert row["numbers"]["cls SimMIM - supervised SE"] == pytest.approx(d.std(ddof=1) / np.sqrt(8))
    assert row["numbers"]["SimMIM wins"] == 1 and row["verdict"] == "reproduced"
    noisy = {"cls": with_items(metrics(cls=0.75)["cls"], [1.5, 0.0, 1.5, 0.0, 1.5, 0.0, 1.5, 0.0])}
    assert fd.f6_transfer(noisy, sup, rand, PASSED, claims=True)["numbers"]["SimMIM wins"] == 0


def test_f4_judges_dropping_a_block_by_the_paired_standard_error():
    rand = {"depth": with_items(metrics(depth=2.0)["depth"], [2.0] * 6)}
    flat = sweep("depth", "rmse", False, [1.0, 1.1])  # 10 % worse: beyond the fixed tolerance
    flat["items"] = {"0": with_items({}, [1.0, 1.2, 0.8, 1.0, 1.2, 0.8])["items"],
                     "1": with_items({}, [1.1, 0.9, 1.3, 1.1, 0.9, 1.3])["items"]}  # noisy: within 2 SE
    row = fd.f4_drop_last({"depth": flat}, rand, PASSED, claims=True)
    assert row["verdict"] == "reproduced" and row["numbers"]["depth K=1 - K=0"] == pytest.approx(0.1)
    steady = dict(flat, items={"0": flat["items"]["0"], "1": with_items({}, [1.1, 1.3, 0.9, 1.1, 1.3, 0.9])["items"]})
    assert fd.f4_drop_last({"depth": steady}, rand, PASSED, claims=True)["verdict"] == "not reproduced"


def test_f6_counts_a_task_only_when_both_fine_tunings_are_trained():
    sup = metrics(cls=0.30, depth=1.00)
    rand = metrics(cls=0.05, depth=1.50)
    sim = metrics(cls=0.35, depth=0.50)
    sim["cls"]["trained"], sup["cls"]["trained"] = True, True
    sim["depth"]["trained"], sup["depth"]["trained"] = True, False  # depth: supervised no better than its baseline
    row = fd.f6_transfer(sim, sup, rand, PASSED, claims=True)
    n = row["numbers"]
    assert n["tasks counted"] == 1 and n["SimMIM wins"] == 1 and row["verdict"] == "reproduced"
    assert n["depth supervised trained"] is False and n["cls SimMIM trained"] is True
    assert ["depth trained", "depth SimMIM trained", "depth supervised trained"] in row["table"]["rows"]
    sim["cls"]["trained"] = False
    row = fd.f6_transfer(sim, sup, rand, PASSED, claims=True)
    assert row["verdict"] == "inconclusive"
    assert row["numbers"]["reason"] == ("no fine-tuning beats its trivial baseline by 2 SE: cls (SimMIM); "
                                        "depth (supervised)")
    assert "both trained" in row["rule"]
    # runs without the field: judged as before
    assert fd.f6_transfer(metrics(cls=0.35, depth=0.5), metrics(cls=0.3, depth=1.0), rand, PASSED,
                          True)["numbers"]["tasks counted"] == 2


def test_f4_judges_only_tasks_whose_full_model_is_trained():
    random_init = metrics(depth=1.2, pose=0.1)
    ok_depth = sweep("depth", "rmse", False, [1.00, 1.04])
    bad_pose = sweep("pose", "ap", True, [0.5, 0.40])  # far worse with a block dropped
    ok_depth["rows"][0]["trained"] = True
    bad_pose["rows"][0]["trained"] = False
    row = fd.f4_drop_last({"depth": ok_depth, "pose": bad_pose}, random_init, PASSED, claims=True)
    assert row["verdict"] == "reproduced"  # pose, untrained, is not judged
    assert row["numbers"]["pose K=0 trained"] is False and row["numbers"]["depth K=0 trained"] is True
    ok_depth["rows"][0]["trained"] = False
    row = fd.f4_drop_last({"depth": ok_depth, "pose": bad_pose}, random_init, PASSED, claims=True)
    assert row["verdict"] == "inconclusive"
    assert row["numbers"]["reason"] == ("no fine-tuning beats its trivial baseline by 2 SE: supervised K=0 on "
                                        "depth, pose")
    del bad_pose["rows"][0]["trained"]  # no field: judged as before
    assert fd.f4_drop_last({"pose": bad_pose}, random_init, PASSED, True)["verdict"] == "not reproduced"


PROBE_SPEC = {"depth": ("rmse", False), "pose": ("ap", True), "track": ("suc", True)}


def probe_doc(curves, noise=0.0, items=8):
    """A probe.json: per task, one row per block whose per-item values are the curve's value plus noise
    (0: the same offsets for every block, so paired differences have SE 0; else independent per block)."""
    shared = np.linspace(-0.05, 0.05, items)
    tasks = {}
    for task, curve in curves.items():
        metric, higher = PROBE_SPEC[task]
        rows = []
        for block, value in enumerate(curve):
            offsets = np.random.default_rng(block).normal(0, noise, items) if noise else shared
            offsets = offsets - offsets.mean()
            rows.append({"block": block, "name": f"blocks.{block}", "stage": 0, metric: value,
                         "values": (value + offsets).tolist()})
        tasks[task] = {"primary": metric, "higher_is_better": higher, "rows": rows,
                       "items": {"unit": "image", "ids": list(range(items)), "statistic": "mean"}}
    return {"tasks": tasks}


PEAKED = {"depth": [1.2, 1.0, 1.1, 1.4], "pose": [0.2, 0.5, 0.4, 0.3], "track": [0.3, 0.5, 0.45, 0.35]}
RISING = {"depth": [1.2, 1.0, 0.9, 0.8], "pose": [0.2, 0.4, 0.5, 0.6], "track": [0.3, 0.5, 0.6, 0.7]}


def test_probe_findings_reproduced_when_supervised_peaks_early_and_simmim_keeps_rising():
    sim, sup = probe_doc(RISING), probe_doc(PEAKED)
    row = fd.f4_probe(sim, sup, PASSED, claims=True)
    n = row["numbers"]
    assert row["verdict"] == "reproduced" and n["tasks holding"] == 3
    assert n["depth supervised best block"] == 1 and n["depth supervised best rmse"] == 1.0
    assert n["depth supervised last rmse"] == 1.4
    assert n["depth supervised best - last"] == pytest.approx(-0.4) and n["depth supervised best - last SE"] < 1e-12
    assert n["pose SimMIM best block"] == 3 and n["pose SimMIM best - last"] == 0.0
    assert row["table"]["columns"] == ["depth rmse", "pose ap", "track suc"]
    row = fd.f6_probe(sim, sup, PASSED, claims=True)
    n = row["numbers"]
    assert row["verdict"] == "reproduced" and n["tasks holding"] == 3
    assert n["depth SimMIM - supervised at best"] == pytest.approx(0.8 - 1.0)
    assert n["track SimMIM - supervised at last"] == pytest.approx(0.7 - 0.35)
    assert n["pose supervised best ap"] == 0.5 and n["pose SimMIM last ap"] == 0.6


def test_probe_findings_not_reproduced_when_the_roles_swap():
    sim, sup = probe_doc(PEAKED), probe_doc(RISING)
    row = fd.f4_probe(sim, sup, PASSED, claims=True)
    assert row["verdict"] == "not reproduced" and row["numbers"]["depth outcome"] == "fails"
    row = fd.f6_probe(sim, sup, PASSED, claims=True)
    assert row["verdict"] == "not reproduced" and row["numbers"]["tasks holding"] == 0


def test_probe_findings_within_errors_are_inconclusive_and_bars_gate_them():
    sim, sup = probe_doc(RISING), probe_doc(PEAKED, noise=2.0)  # supervised's peak drowned in per-image noise
    row = fd.f4_probe(sim, sup, PASSED, claims=True)
    assert row["numbers"]["depth outcome"] == "within errors" and row["numbers"]["tasks within errors"] == 3
    assert row["verdict"] == "inconclusive" and row["numbers"]["reason"] == "within errors: depth, pose, track"
    row = fd.f6_probe(probe_doc(RISING, noise=2.0), sup, PASSED, claims=True)
    assert row["verdict"] == "inconclusive" and row["numbers"]["reason"].startswith("within errors")
    gated = fd.f4_probe(probe_doc(RISING), probe_doc(PEAKED), FAILED_SIMMIM, claims=True)
    assert gated["verdict"] == "inconclusive" and gated["numbers"]["reason"] == "training bar not passed: simmim"
    assert "depth supervised best block" in gated["numbers"]  # the numbers are still shown


def test_probe_rows_render_in_the_report_table():
    from mimlens.report.html import findings_table

    rows = [fd.f4_probe(probe_doc(RISING), probe_doc(PEAKED), PASSED, True),
            fd.f6_probe(probe_doc(RISING), probe_doc(PEAKED), PASSED, True)]
    page = findings_table(rows)
    assert "F4-probe" in page and "F6-probe" in page and "supervised best - last SE" in page
