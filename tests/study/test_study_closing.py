"""The study's closing on hand-made stage outputs: labels and the about list, the notice of a smoke run, and F2
taken from a masking study finished in ``OUT/masking`` (under the current rules only)."""

import json

import yaml

from mimlens.findings import rules
from mimlens.io import save_json
from mimlens.study.closing import findings_and_report
from mimlens.study.spec import load_study


def study_in(tmp_path, **extra):
    doc = {"models": {"mim": {"source": "vit-micro-32", "role": "mim", "label": "SimMIM"},
                      "sup": {"source": "vit-micro-32", "role": "supervised"}}, **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_study(path)


def closing(tmp_path, study):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    findings_and_report(study, out)
    return json.loads((out / "findings.json").read_text())


def test_labels_and_about_reach_the_findings_and_a_smoke_run_says_so(tmp_path):
    doc = closing(tmp_path, study_in(tmp_path, about={"preset": "quick"}, claims_findings=False))
    assert doc["about"]["models"] == "SimMIM (mim), sup (supervised)" and doc["about"]["preset"] == "quick"
    assert doc["notice"].startswith(rules.QUICK_REASON) and "no finding is judged" in doc["notice"]
    assert closing(tmp_path, study_in(tmp_path))["notice"] is None


def test_f2_comes_from_a_masking_study_finished_under_the_current_rules(tmp_path):
    study = study_in(tmp_path)
    masking_row = {"id": "F2", "statement": rules.STATEMENTS["F2"], "verdict": "within errors",
                   "numbers": {"tasks judged": 2}, "rule": "masking rule", "table": {"columns": [], "rows": []},
                   "figures": ["figures/f2_transfer.png"]}
    alone = {r["id"]: r for r in closing(tmp_path, study)["findings"]}["F2"]
    assert alone["verdict"] == "not judged"
    save_json({"rules_version": rules.RULES_VERSION, "findings": [masking_row]},
              tmp_path / "out" / "masking" / "findings.json")
    joined = {r["id"]: r for r in closing(tmp_path, study)["findings"]}["F2"]
    assert joined["verdict"] == "within errors" and joined["numbers"]["masking study"] == "masking/report.html"
    save_json({"rules_version": rules.RULES_VERSION - 1, "findings": [masking_row]},
              tmp_path / "out" / "masking" / "findings.json")
    older = {r["id"]: r for r in closing(tmp_path, study)["findings"]}["F2"]
    assert older["verdict"] == "not judged"
