"""Findings by role (mimlens.findings.judge_study, read_study) on hand-made JSON documents: which models each row
compares, rows per MIM model, missing roles, failed and absent training bars, missing documents of a study folder."""

import json

import numpy as np
import pytest

from mimlens.errors import MimlensError
from mimlens.findings import ROLES, judge_study, read_study
from mimlens.findings import rules as fd
from mimlens.findings.roles import NO_BAR, NO_MASKING_STUDY

TASKS = ("depth", "pose")
SPEC = {"depth": ("rmse", False), "pose": ("ap", True), "track": ("suc", True)}
IDS = ["F1", "F2", "F3", "F4", "F5", "F6", "F4-probe", "F6-probe"]


def attention(distances, kls):
    return {"layers": [{"distance_px": [d] * 2, "head_kl_mean": k} for d, k in zip(distances, kls, strict=True)]}


def items(task, mean, seed):
    """An ``items`` section of 12 images: ``mean`` plus small centred noise of its own (``seed``)."""
    noise = np.random.default_rng(seed).normal(0, 0.01, 12)
    values = (mean + noise - noise.mean()).tolist()
    return {"unit": "image", "ids": list(range(12)), "statistic": "mean", "values": values}


def metrics(task, mean, seed):
    name, higher = SPEC[task]
    return {"primary": {"name": name, "higher_is_better": higher, "value": mean}, "trained": True,
            "items": items(task, mean, seed)}


def sweep(task, k0, k1):
    name, higher = SPEC[task]
    return {"task": task, "metric": name, "higher_is_better": higher,
            "rows": [{"drop_last": 0, name: k0, "trained": True}, {"drop_last": 1, name: k1}],
            "items": {"0": items(task, k0, 1), "1": items(task, k1, 2)}}


def probe(curves):
    """A probe.json whose blocks share per-item offsets (paired differences between blocks have SE 0)."""
    offsets = np.linspace(-0.05, 0.05, 8)
    tasks = {}
    for task, curve in curves.items():
        name, higher = SPEC[task]
        tasks[task] = {"primary": name, "higher_is_better": higher,
                       "items": {"unit": "image", "ids": list(range(8)), "statistic": "mean"},
                       "rows": [{"block": b, name: v, "values": (v + offsets).tolist()} for b, v in enumerate(curve)]}
    return {"tasks": tasks}


PEAKED = {"depth": [1.2, 1.0, 1.1, 1.4], "pose": [0.2, 0.5, 0.4, 0.3], "track": [0.3, 0.5, 0.45, 0.35]}
RISING = {"depth": [1.2, 1.0, 0.9, 0.8], "pose": [0.2, 0.4, 0.5, 0.6], "track": [0.3, 0.5, 0.6, 0.7]}
DIVERSE_KL, VANISHING_KL = [1.0, 1.2, 1.1, 0.9, 0.8, 0.7], [1.0, 0.8, 0.6, 0.2, 0.1, 0.05]


def cka_document(matrix, seed):
    """A within-model cka.json with 50 paired half-sample replicates of its mean off-diagonal CKA (sd 0.01)."""
    off = matrix[0][1]
    replicates = (off + 0.01 * np.random.default_rng(seed).normal(size=50)).tolist()
    return {"matrix": matrix, "estimator": "linear", "images": 3.5, "num_images": 64, "batch_size": 64, "seed": 0,
            "bootstrap": 50, "off_diagonal_replicates": replicates}


def model(distances, kls, cka, depth, pose, curves, seed):
    """A model's documents as read_study gives them (fine-tuning means per task)."""
    return {"attention": attention(distances, kls), "cka": cka_document(cka, seed),
            "probe": probe(curves), "sweeps": {},
            "metrics": {"depth": metrics("depth", depth, seed), "pose": metrics("pose", pose, seed + 1)}}


HIGH_CKA, LOW_CKA = [[1.0, 0.9], [0.9, 1.0]], [[1.0, 0.5], [0.5, 1.0]]
LOCAL = ([12.0, 14.0, 20.0, 25.0, 26.0, 29.0], DIVERSE_KL, HIGH_CKA, 0.8, 0.7, RISING)  # what the paper says of MIM
NOT_LOCAL = ([30.0] * 6, VANISHING_KL, LOW_CKA, 1.2, 0.3, PEAKED)  # like a supervised model, worse fine-tunings


def documents():
    """simmim and mae_flat (MIM), sup (supervised, drop sweeps on depth and pose), rand (random init), moco."""
    sup = model([20.0, 24.0, 28.0, 31.0, 32.5, 33.0], VANISHING_KL, LOW_CKA, 1.0, 0.5, PEAKED, 20)
    sup["sweeps"] = {"depth": sweep("depth", 1.0, 0.9), "pose": sweep("pose", 0.5, 0.6)}
    return {"simmim": model(*LOCAL, 10), "mae_flat": model(*NOT_LOCAL, 30), "sup": sup,
            "rand": model([33.0] * 6, [1.0] * 6, LOW_CKA, 2.0, 0.1, PEAKED, 40),
            "moco": model([33.0] * 6, [1.0] * 6, LOW_CKA, 2.0, 0.1, PEAKED, 50)}


PASSED = {"simmim": {"passed": True}, "mae_flat": {"passed": True}, "sup": {"passed": True}}


def by_id(rows):
    return {row["id"]: row for row in rows}


def test_a_study_without_a_supervised_model_judges_only_what_needs_none():
    roles = {"simmim": "mim", "rand": "random", "moco": "contrastive"}
    rows = judge_study(roles, documents(), PASSED, True, TASKS)
    assert [r["id"] for r in rows] == IDS
    for row in rows:
        assert row["verdict"] == "not judged"
        assert row["numbers"]["reason"] == ("no supervised model in the study" if row["id"] != "F2" else
                                            NO_MASKING_STUDY)
    found = by_id(rows)
    assert found["F1"]["compared"] == {"mim": "simmim", "random": "rand"}
    assert found["F4"]["compared"] == {"random": "rand"} and found["F5"]["compared"] == {"mim": "simmim"}
    assert found["F2"]["compared"] == {}
    assert "the supervised model's attention.json" in found["F1"]["rule"]


def test_two_mim_models_give_a_row_each_against_the_first_models_of_the_other_roles():
    roles = {"rand": "random", "simmim": "mim", "sup": "supervised", "mae_flat": "mim", "moco": "contrastive"}
    docs = documents()
    rows = judge_study(roles, docs, PASSED, True, TASKS)
    assert [r["id"] for r in rows] == ["F1", "F1 (mae_flat)", "F2", "F3", "F3 (mae_flat)", "F4", "F5", "F5 (mae_flat)",
                                       "F6", "F6 (mae_flat)", "F4-probe", "F4-probe (mae_flat)", "F6-probe",
                                       "F6-probe (mae_flat)"]
    verdicts = {r["id"]: r["verdict"] for r in rows}
    assert verdicts == {"F1": "reproduced", "F1 (mae_flat)": "not reproduced", "F2": "not judged",
                        "F3": "reproduced", "F3 (mae_flat)": "not reproduced", "F4": "reproduced",
                        "F5": "reproduced", "F5 (mae_flat)": "within errors",  # the same CKA as sup's
                        "F6": "reproduced", "F6 (mae_flat)": "not reproduced",
                        "F4-probe": "reproduced", "F4-probe (mae_flat)": "not reproduced",
                        "F6-probe": "reproduced", "F6-probe (mae_flat)": "within errors"}
    found = by_id(rows)
    assert found["F1"]["compared"] == {"mim": "simmim", "supervised": "sup", "random": "rand"}
    assert found["F1 (mae_flat)"]["compared"] == {"mim": "mae_flat", "supervised": "sup", "random": "rand"}
    assert found["F4"]["compared"] == {"supervised": "sup", "random": "rand"}
    assert found["F6 (mae_flat)"]["numbers"]["tasks failing"] == 2
    # each row is the rule's own row on the models it names, under the row's id
    rule = fd.f1_locality(docs["mae_flat"]["attention"], docs["sup"]["attention"], docs["rand"]["attention"],
                          PASSED, True, bar_models=("mae_flat", "sup"))
    assert {k: v for k, v in found["F1 (mae_flat)"].items() if k != "compared"} == {**rule, "id": "F1 (mae_flat)"}


def test_a_model_failing_its_bar_leaves_its_rows_not_judged_and_one_without_a_bar_counts_as_passing():
    roles = {"simmim": "mim", "mae_ext": "mim", "sup": "supervised", "rand": "random"}
    docs = {**documents(), "mae_ext": model(*LOCAL, 60)}
    bars = {"simmim": {"passed": False}, "sup": {"passed": True}}  # mae_ext: external weights, no bar
    found = by_id(judge_study(roles, docs, bars, True, TASKS))
    for fid in ("F1", "F3", "F5", "F6", "F4-probe", "F6-probe"):
        assert found[fid]["verdict"] == "not judged"
        assert found[fid]["numbers"]["reason"] == "training bar not passed: simmim"
        assert NO_BAR not in found[fid]["numbers"]
        ext = found[f"{fid} (mae_ext)"]
        assert ext["verdict"] == "reproduced" and ext["compared"]["mim"] == "mae_ext"
        assert ext["numbers"][NO_BAR] == "mae_ext (external weights: counted as passing)"
        assert [NO_BAR, NO_BAR] in ext["table"]["rows"]
    assert found["F4"]["verdict"] == "reproduced"  # F4 needs the supervised bar alone
    failed_sup = by_id(judge_study(roles, docs, {**bars, "sup": {"passed": False}}, True, TASKS))
    assert failed_sup["F4"]["numbers"]["reason"] == "training bar not passed: sup"
    assert failed_sup["F1 (mae_ext)"]["numbers"]["reason"] == "training bar not passed: sup"


def write(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def test_a_study_folder_without_the_fine_tunings_of_a_model_leaves_the_rows_that_need_them_not_judged(tmp_path):
    docs = documents()
    for m in ("mae", "sup", "rand"):
        source = docs["simmim" if m == "mae" else m]
        write(tmp_path / "analysis" / m / "attention.json", source["attention"])
        write(tmp_path / "analysis" / m / "cka.json", source["cka"])
        if m != "rand":
            write(tmp_path / "probe" / m / "probe.json", source["probe"])
    for task in TASKS:  # no fine-tuning of mae; sup's are drop sweeps, its full model in drop_0/
        write(tmp_path / "finetune" / f"{task}_rand" / "metrics.json", docs["rand"]["metrics"][task])
        write(tmp_path / "finetune" / f"{task}_sup" / "drop_sweep.json", docs["sup"]["sweeps"][task])
        write(tmp_path / "finetune" / f"{task}_sup" / "drop_0" / "metrics.json", docs["sup"]["metrics"][task])
    write(tmp_path / "bars.json", {"mae": {"passed": True}, "sup": {"passed": True}})
    roles = {"mae": "mim", "sup": "supervised", "rand": "random"}
    study = read_study(tmp_path, list(roles), TASKS)
    assert study.documents["sup"]["metrics"]["pose"] == docs["sup"]["metrics"]["pose"]
    assert study.documents["mae"]["metrics"] == {} and "probe" not in study.documents["rand"]
    assert study.avgdist is None
    found = by_id(judge_study(roles, study.documents, study.bars, True, TASKS))
    assert found["F6"]["verdict"] == "not judged"
    assert found["F6"]["numbers"]["reason"] == ("missing finetune/depth_mae/metrics.json, "
                                                "finetune/pose_mae/metrics.json")
    assert found["F6"]["compared"] == {"mim": "mae", "supervised": "sup", "random": "rand"}
    judged = {fid: found[fid]["verdict"] for fid in ("F1", "F3", "F4", "F5", "F4-probe", "F6-probe")}
    assert judged == dict.fromkeys(judged, "reproduced")
    no_probe = {**study.documents, "sup": {k: v for k, v in study.documents["sup"].items() if k != "probe"}}
    without_probe = judge_study(roles, no_probe, study.bars, True, TASKS)
    assert by_id(without_probe)["F4-probe"]["numbers"]["reason"] == "missing probe/sup/probe.json"


def test_an_unknown_role_or_a_study_folder_that_does_not_exist_is_one_clear_error(tmp_path):
    with pytest.raises(MimlensError, match=f"^{tmp_path / 'nowhere'} is not a study folder: no such directory$"):
        read_study(tmp_path / "nowhere", ["m"], TASKS)
    assert ROLES == ("mim", "supervised", "contrastive", "random", "other")
    with pytest.raises(MimlensError, match="model 'x' has role 'teacher'; expected one of mim, supervised, "
                                           "contrastive, random, other"):
        judge_study({"x": "teacher"}, {}, {}, True, TASKS)
