"""Which block to transfer from: the analyses' per-block series, Spearman's rho against scipy, the chosen block and
its uncertainty against a brute-force bootstrap, models lacking documents, and block_choice.json in the report."""

import json

import numpy as np
import pytest
from scipy import stats

from mimlens.analysis.registry import ANALYSES
from mimlens.errors import MimlensError
from mimlens.findings import block_choice as bc
from mimlens.io import finite, read_json, save_json
from mimlens.report.html import build_report

Z, RESAMPLES = 2.0, 200


def attention_doc(rng, blocks=5, heads=3):
    return {"layers": [{"distance_px": rng.uniform(5, 40, heads).tolist(), "entropy": rng.uniform(1, 4, heads).tolist(),
                        "head_kl_mean": None if b == 0 else float(rng.uniform(0, 2))} for b in range(blocks)]}


def cka_doc(rng, blocks=5):
    matrix = rng.uniform(0, 1, (blocks, blocks)).tolist()
    matrix[1][-1] = None
    return {"model_a": "m", "model_b": None, "layers_a": [f"blocks.{i}" for i in range(blocks)], "matrix": matrix}


def probe_doc(rng, blocks=5, items=40, tasks=(("cls", True), ("depth", False))):
    doc = {"tasks": {}}
    for name, higher in tasks:
        rows = []
        for b in range(blocks):
            values = (rng.random(items) < 0.3 + 0.1 * b).astype(float).tolist() if higher else \
                rng.gamma(2.0, 1.0 + 0.3 * b, items).tolist()
            rows.append({"block": b, "name": f"blocks.{b}", "stage": 0, "values": values,
                         "se": float(np.std(values, ddof=1) / np.sqrt(items))})
            rows[-1]["top1" if higher else "rmse"] = float(np.mean(values))
        doc["tasks"][name] = {"primary": "top1" if higher else "rmse", "higher_is_better": higher,
                              "items": {"unit": "image", "ids": list(range(items)), "statistic": "mean"}, "rows": rows}
    return doc


# ------------------------------------------------------------------------------------------ per-block series


def test_attention_series_are_head_means_per_block():
    rng = np.random.default_rng(0)
    doc = attention_doc(rng)
    series = ANALYSES["attention"].function("block_series")(doc)
    assert series["attention distance (px)"] == pytest.approx([np.mean(x["distance_px"]) for x in doc["layers"]])
    assert series["attention entropy (nats)"] == pytest.approx([np.mean(x["entropy"]) for x in doc["layers"]])
    assert series["KL between heads (nats)"] == [x["head_kl_mean"] for x in doc["layers"]]


def test_cka_series_is_the_last_column_and_needs_one_model():
    rng = np.random.default_rng(1)
    doc = cka_doc(rng)
    hook = ANALYSES["cka"].function("block_series")
    assert hook(doc)["CKA with the last block"] == [row[-1] for row in doc["matrix"]]
    with pytest.raises(MimlensError, match="within-model"):
        hook({**doc, "model_b": "other"})


# ------------------------------------------------------------------------------------------- rank correlation


@pytest.mark.parametrize("seed", range(4))
def test_spearman_equals_scipy_with_ties_and_missing_values(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 5, 12).astype(float).tolist(), rng.normal(size=12).tolist()
    y[3], x[7] = None, float("nan")
    keep = [i for i in range(12) if i not in (3, 7)]
    found = bc.spearman(x, y)
    assert found["n"] == 10
    assert found["rho"] == pytest.approx(stats.spearmanr([x[i] for i in keep], [y[i] for i in keep]).statistic)


def test_spearman_known_answers_and_refusals():
    assert bc.spearman([1, 2, 3, 4], [10, 20, 25, 100])["rho"] == pytest.approx(1.0)
    assert bc.spearman([1, 2, 3, 4], [4, 3, 2, 1])["rho"] == pytest.approx(-1.0)
    assert bc.spearman([1, 2], [3, 4]) == {"rho": None, "n": 2, "why": "fewer than 3 blocks with both values"}
    assert bc.spearman([1, 1, 1], [1, 2, 3])["rho"] is None
    with pytest.raises(MimlensError, match="paired"):
        bc.spearman([1, 2, 3], [1, 2])


def test_pooled_rho_ranks_within_each_model_then_pools():
    rng = np.random.default_rng(2)
    models = {"a": {"analyses": {"attention": attention_doc(rng, 5)}, "probe": probe_doc(rng, 5)},
              "b": {"analyses": {"attention": attention_doc(rng, 7)}, "probe": probe_doc(rng, 7)}}
    doc = bc.block_choice(models, resamples=20)
    quantity = "attention: attention distance (px)"
    xs, ys = [], []
    for m in models.values():
        x = [np.mean(layer["distance_px"]) for layer in m["analyses"]["attention"]["layers"]]
        y = [r["top1"] for r in m["probe"]["tasks"]["cls"]["rows"]]
        xs += list((stats.rankdata(x) - 1) / (len(x) - 1))
        ys += list((stats.rankdata(y) - 1) / (len(y) - 1))
        assert doc["models"]["a" if len(x) == 5 else "b"]["correlations"][quantity]["cls"]["rho"] == \
            pytest.approx(stats.spearmanr(x, y).statistic)
    pooled = doc["pooled"][quantity]["cls"]
    assert pooled["n"] == 12 and pooled["models"] == ["a", "b"]
    assert pooled["rho"] == pytest.approx(stats.spearmanr(xs, ys).statistic)
    # head KL of block 0 is missing: 4 + 6 blocks pooled
    assert doc["pooled"]["attention: KL between heads (nats)"]["cls"]["n"] == 10


# ---------------------------------------------------------------------------------------- the chosen block


def brute_force_choice(values, higher, resamples):
    """Choose on the even items, bootstrap the even items draw by draw, judge on the odd items (paired SE)."""
    values = [np.array([np.nan if v is None else v for v in row]) for row in values]
    sign = 1.0 if higher else -1.0
    selection = [row[0::2] for row in values]
    means = [sign * np.nanmean(row) for row in selection]
    chosen = int(np.argmax(means))
    draws = np.random.default_rng(0).integers(0, len(selection[0]), size=(resamples, len(selection[0])))
    wins = np.zeros(len(values))
    for draw in draws:
        scores = [sign * np.nanmean(row[draw]) for row in selection]
        tied = [b for b, v in enumerate(scores) if v == max(scores)]
        for b in tied:
            wins[b] += 1 / len(tied)
    within = []
    for b, row in enumerate(values):
        a, c = row[1::2], values[chosen][1::2]
        keep = ~np.isnan(a) & ~np.isnan(c)
        d = a[keep] - c[keep]
        if b == chosen or sign * d.mean() >= -Z * d.std(ddof=1) / np.sqrt(d.size):
            within.append(b)
    return chosen, wins / resamples, within


@pytest.mark.parametrize("task", ["cls", "depth"])
def test_choice_and_its_uncertainty_equal_a_brute_force_bootstrap(task):
    rng = np.random.default_rng(3)
    probe = probe_doc(rng, blocks=6, items=41)["tasks"][task]
    if task == "depth":  # an image without valid depth has no value
        probe["rows"][2]["values"][4] = None
    values = [r["values"] for r in probe["rows"]]
    chosen, share, within = brute_force_choice(values, probe["higher_is_better"], RESAMPLES)
    found = bc.choose(probe, resamples=RESAMPLES)
    assert found["chosen"] == chosen
    assert [found["bootstrap"][str(b)] for b in range(6)] == pytest.approx(share.tolist())
    assert found["within_errors"] == within
    assert found["items"] == {"all": 41, "selection": 21}
    assert found["scores"] == [r[probe["primary"]] for r in probe["rows"]]


def test_identical_blocks_share_the_bootstrap_and_the_earlier_is_chosen():
    probe = probe_doc(np.random.default_rng(7), blocks=3)["tasks"]["cls"]
    probe["rows"][0]["values"] = [1.0] * 40
    probe["rows"][1] = {**probe["rows"][0], "block": 1}
    probe["rows"][2]["values"] = [0.0] * 40
    found = bc.choose(probe, resamples=50)
    assert (found["chosen"], found["bootstrap"], found["within_errors"]) == (0, {"0": 0.5, "1": 0.5, "2": 0.0}, [0, 1])


def test_one_block_is_no_choice():
    probe = probe_doc(np.random.default_rng(4), blocks=1)["tasks"]["cls"]
    found = bc.choose(probe)
    assert (found["chosen"], found["bootstrap"], found["within_errors"], found["judgement"]) == (0, {"0": 1.0}, [0],
                                                                                                 {})


def test_without_per_item_values_the_point_values_and_their_ses_decide():
    rows = [{"block": b, "rmse": v, "se": s} for b, (v, s) in enumerate([(2.0, 0.1), (1.0, 0.1), (1.2, 0.05),
                                                                           (1.5, 0.1)])]
    found = bc.choose({"primary": "rmse", "higher_is_better": False, "rows": rows})
    # |1.2 - 1.0| = 0.2 < 2 * hypot(0.05, 0.1) = 0.224; |1.5 - 1.0| = 0.5 > 0.283
    assert (found["chosen"], found["within_errors"], found["bootstrap"]) == (1, [1, 2], None)
    assert found["rule"].startswith("no per-item values")


# ------------------------------------------------------------------------------------- folders and report


def study_folder(tmp_path, rng):
    for model in ("full", "no_probe", "no_analysis"):
        if model != "no_analysis":
            save_json(attention_doc(rng), tmp_path / "analysis" / model / "attention.json")
            save_json(cka_doc(rng), tmp_path / "analysis" / model / "cka.json")
        if model != "no_probe":
            save_json(probe_doc(rng), tmp_path / "probe" / model / "probe.json")
    save_json([], tmp_path / "findings.json")
    return ["full", "no_probe", "no_analysis"]


def test_missing_documents_are_named_not_available(tmp_path):
    models = study_folder(tmp_path, np.random.default_rng(5))
    doc = bc.block_choice(bc.read_models(tmp_path, models, {}), resamples=20)
    assert doc["models"]["no_probe"]["probe"] == "not available: no probe/no_probe/probe.json"
    assert doc["models"]["no_probe"]["correlations"] == doc["models"]["no_probe"]["probe"]
    lacking = doc["models"]["no_analysis"]["diagnostics"]
    assert lacking.startswith("not available: no analysis/no_analysis/attention.json or ")
    assert doc["models"]["no_analysis"]["correlations"] == lacking
    assert set(doc["models"]["full"]["diagnostics"]) == {
        "attention: attention distance (px)", "attention: attention entropy (nats)",
        "attention: KL between heads (nats)", "cka: CKA with the last block"}
    assert all(found["models"] == ["full"] for by_task in doc["pooled"].values() for found in by_task.values())


def test_block_choice_json_round_trips_and_the_report_shows_it(tmp_path):
    models = study_folder(tmp_path, np.random.default_rng(6))
    path = bc.write_block_choice(tmp_path, models, {}, {m: "C0" for m in models})
    written = read_json(path)
    assert written == json.loads(json.dumps(finite(bc.block_choice(bc.read_models(tmp_path, models, {})))))
    assert (tmp_path / "figures" / "block_choice.png").is_file()
    page = build_report([tmp_path], tmp_path / "report.html").read_text()
    assert "Which block to transfer from" in page
    assert "not available: no probe/no_probe/probe.json" in page
    chosen = written["models"]["full"]["probe"]["cls"]["chosen"]
    assert f"<td>full</td><td>cls</td><td>top1</td><td class=\"num\">{chosen}</td>" in page
