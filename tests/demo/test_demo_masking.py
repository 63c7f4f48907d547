"""The masking study (F2): its settings' AvgDist recomputed by brute force, the F2 rule on hand-made JSON and the
default demo's F2 row taken from a study in its folder. The quick study runs end to end in test_demo_quick.py,
inside the quick demo's folder."""

import json
import math

import numpy as np
import pytest

from mimlens.demo.presets import DEFAULT, MASKING
from mimlens.findings import rules as fd

BAND_64 = (10 * 64 / 224, 20 * 64 / 224)  # the paper's moderate band, 10-20 px at 224 px, scaled to 64 px


def brute_avg_dist(img_size, mask_patch, ratio, num_masks, seed):
    """Mean over masks and masked pixels of the distance to the nearest visible pixel (pixel centres), with
    exactly ceil(ratio * blocks) blocks masked, chosen uniformly, by direct search over all pixel pairs."""
    rng = np.random.default_rng(seed)
    side = img_size // mask_patch
    ys, xs = np.mgrid[0:img_size, 0:img_size]
    coords = np.stack([ys.ravel(), xs.ravel()], 1).astype(float)
    distances = []
    for _ in range(num_masks):
        blocks = np.zeros(side * side, bool)
        blocks[rng.choice(side * side, math.ceil(round(ratio * side * side, 6)), replace=False)] = True
        mask = np.kron(blocks.reshape(side, side), np.ones((mask_patch, mask_patch), bool)).ravel()
        d = np.sqrt(((coords[mask][:, None, :] - coords[~mask][None, :, :]) ** 2).sum(-1)).min(1)
        distances.append(d)
    return float(np.concatenate(distances).mean())


def test_the_study_spans_avgdist_from_below_to_far_above_the_band():
    found = [brute_avg_dist(64, s.mask_patch, s.ratio, 12, seed=i) for i, s in enumerate(MASKING.mask_settings)]
    low, high = BAND_64
    assert found == sorted(found)
    assert found[0] < low  # below: 8 px blocks, 20 % masked
    assert low <= found[1] <= high  # in the band: 8 px blocks, 60 % masked
    assert high < found[2] < 2 * high  # above: the default preset's 16 px blocks
    assert found[3] > 3 * high  # far above: 32 px blocks
    assert all(s.mask_patch % 8 == 0 for s in MASKING.mask_settings)  # whole 8 px tokens of vit-tiny-64


def test_the_library_avgdist_of_each_setting_agrees_with_brute_force():
    from mimlens.pretrain.masking import avg_dist

    for s in MASKING.mask_settings:
        assert avg_dist(64, s.mask_patch, s.ratio, 300, seed=0) == pytest.approx(
            brute_avg_dist(64, s.mask_patch, s.ratio, 40, seed=1), rel=0.08)


# ---------------------------------------------------------------------------------------------- the F2 rule

SETTINGS = [("a", 8, 0.2), ("b", 8, 0.6), ("c", 16, 0.6), ("d", 32, 0.6)]
AVGDIST = {"img_size": 64, "moderate_band_px": list(BAND_64),
           "settings": [{"mask_patch_size": p, "ratio": r, "avg_dist_px": d}
                        for (_, p, r), d in zip(SETTINGS, (2.4, 4.1, 8.7, 19.4), strict=True)]}


def fine_tuning(values, trained=True):
    """A depth ``metrics.json``: RMSE per image (lower is better)."""
    values = [float(v) for v in values]
    return {"primary": {"name": "rmse", "value": float(np.mean(values)), "higher_is_better": False,
                        "se": float(np.std(values, ddof=1) / np.sqrt(len(values)))},
            "items": {"ids": list(range(len(values))), "statistic": "mean", "values": values}, "trained": trained}


def judge(offsets, noise=0.01, claims=True, trained=True):
    """F2 of one depth task whose settings a-d have per-image RMSE 1 + offset + shared and own noise."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.2, 200)
    runs = {name: fine_tuning(1 + off + shared + rng.normal(0, noise, 200), trained)
            for (name, _, _), off in zip(SETTINGS, offsets, strict=True)}
    attention = {name: {"layers": [{"distance_px": [d, d + 1]}]} for (name, _, _), d in zip(SETTINGS, (3, 4, 5, 6),
                                                                                             strict=True)}
    return fd.f2_masking(AVGDIST, SETTINGS, {"depth": runs}, attention, {}, {}, claims)


def test_a_moderate_setting_best_beyond_errors_reproduces_f2():
    row = judge([0.2, 0.0, 0.1, 0.3])
    assert row["verdict"] == "reproduced"
    numbers = row["numbers"]
    assert numbers["depth chosen in band"] == "b" and numbers["depth chosen outside band"] == "c"
    assert numbers["depth outcome"] == "holds" and numbers["depth band - outside items"] == 100  # judgement half
    assert numbers["b in band"] and not numbers["a in band"] and not numbers["d in band"]
    assert numbers["depth band - outside"] == pytest.approx(-0.1, abs=0.01)
    assert numbers["depth band - outside SE"] < 0.01
    assert numbers["b mean attention px"] == pytest.approx(4.5)
    assert "ImageNet-1k" in numbers["paper's setting"] and "ImageNet-1k" in row["rule"]
    assert row["table"]["columns"] == ["a", "b", "c", "d"]  # in AvgDist order


def test_a_setting_outside_the_band_best_beyond_errors_does_not_reproduce_f2():
    row = judge([0.3, 0.2, 0.1, 0.0])
    assert row["verdict"] == "not reproduced"
    assert row["numbers"]["depth chosen outside band"] == "d" and row["numbers"]["depth outcome"] == "fails"


def test_differences_within_errors_give_within_errors_with_the_detectable_difference():
    row = judge([0.002, 0.0, 0.001, 0.003], noise=0.1)
    assert row["numbers"]["depth outcome"] == "within errors"
    assert row["verdict"] == "within errors" and row["numbers"]["reason"].startswith("within errors: depth (detectable")


def test_untrained_fine_tunings_or_a_smoke_run_are_not_judged():
    row = judge([0.2, 0.0, 0.1, 0.3], trained=False)
    assert row["verdict"] == "not judged" and fd.UNTRAINED_REASON in row["numbers"]["reason"]
    row = judge([0.2, 0.0, 0.1, 0.3], claims=False)
    assert row["verdict"] == "not judged" and row["numbers"]["reason"] == fd.QUICK_REASON


def test_the_default_demo_takes_its_f2_row_from_a_study_in_its_folder(tmp_path):
    from mimlens.demo.findings_stage import f2_row

    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "avgdist.json").write_text(json.dumps(AVGDIST))
    alone = f2_row(tmp_path, DEFAULT)
    assert alone["verdict"] == "not judged" and "--preset masking" in alone["numbers"]["reason"]
    study = judge([0.2, 0.0, 0.1, 0.3])
    (tmp_path / "masking").mkdir()
    (tmp_path / "masking" / "findings.json").write_text(json.dumps({"rules_version": fd.RULES_VERSION,
                                                                    "findings": [study]}))
    row = f2_row(tmp_path, DEFAULT)
    assert row["verdict"] == "reproduced" and row["rule"] == study["rule"]
    assert row["numbers"]["masking study"] == "masking/report.html"
    assert {k: v for k, v in row["numbers"].items() if k != "masking study"} == study["numbers"]
    # a study judged under other rules (version 1 wrote no version) is not quoted
    (tmp_path / "masking" / "findings.json").write_text(json.dumps({"findings": [study]}))
    old = f2_row(tmp_path, DEFAULT)
    assert old["verdict"] == "not judged" and "rules version 1" in old["numbers"]["reason"]
