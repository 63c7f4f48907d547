"""The findings of a finished demo or study folder under the rules that wrote its ``findings.json`` and under the
current rules, side by side, recomputed from the same stages; nothing is written unless ``--write`` is given.

    python benchmarks/findings_versions.py runs/demo-default            # the demo and its masking study
    python benchmarks/findings_versions.py runs/demo-default/masking    # the study alone
    python benchmarks/findings_versions.py runs/demo-default --write    # then rewrite findings.json and report.html

Per finding: the verdict in ``findings.json`` (with its ``rules_version``; none written means version 1), the
verdict of the current rules (``mimlens.findings.rules.RULES_VERSION``) and the reasons of both; F5 also under
version 2 (the fixed margin, ``f5_cka_v2``) on the same ``cka.json`` files, beside version 3's interval. ``--write``
rewrites ``findings.json``, the cross-run figures and ``report.html`` under the current rules (the study's first,
which rewrites the demo's too) as the demo's last stage does, without checking or running any other stage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def study_of(out: Path):
    """The study a study folder (``mimlens demo --preset default`` writes one) was run from, else None."""
    from mimlens.config import load_yaml
    from mimlens.study.runner import MARKER
    from mimlens.study.spec import load_study

    config = out / "config.yaml"
    found = load_yaml(config).get(MARKER) if config.is_file() else None
    return load_study(found["file"]) if found else None


def preset_of(out: Path):
    from mimlens.config import load_yaml
    from mimlens.demo.presets import get_preset
    from mimlens.demo.stages import MARKER

    config = out / "config.yaml"
    if not config.is_file() or MARKER not in load_yaml(config):
        sys.exit(f"{out} is neither a demo nor a study folder: {config} with a '{MARKER}' or 'study' key is "
                 "missing")
    return get_preset(str(load_yaml(config)[MARKER]["preset"]))


def claims(out: Path) -> bool:
    study = study_of(out)
    return study.claims_findings if study is not None else preset_of(out).claims


def is_masking_study(out: Path) -> bool:
    return study_of(out) is None and bool(preset_of(out).mask_settings)


def study_row(out: Path) -> dict:
    """F2 of the masking study in ``out`` under the current rules."""
    from mimlens.demo.masking import study_documents
    from mimlens.findings import rules as fd
    from mimlens.io import finite

    preset = preset_of(out)
    return finite(fd.f2_masking(**study_documents(out, preset), claims=preset.claims))


def current_rows(out: Path) -> list[dict]:
    """Every findings row of the demo (or study) in ``out`` under the current rules, from its stages' JSON."""
    from mimlens.demo.findings_stage import compute_findings
    from mimlens.findings import rules as fd
    from mimlens.findings.folder import MASKING_FOLDER as FOLDER

    study = study_of(out)
    if study is not None:
        from mimlens.study.closing import judged_rows

        return judged_rows(study, out, json.loads((out / "bars.json").read_text()))
    preset = preset_of(out)
    if preset.mask_settings:
        return [study_row(out)]
    rows = compute_findings(out, preset)
    if (out / FOLDER / "findings.json").is_file():
        rows = [fd.f2_from_study(study_row(out / FOLDER), FOLDER) if r["id"] == "F2" else r for r in rows]
    return rows


def written_rows(out: Path) -> tuple[int, dict[str, dict]]:
    doc = json.loads((out / "findings.json").read_text())
    rows = doc["findings"] if isinstance(doc, dict) else doc
    return (doc.get("rules_version", 1) if isinstance(doc, dict) else 1), {r["id"]: r for r in rows}


def f5_version_2(out: Path, row: dict) -> dict:
    """F5 under rules version 2 on the ``cka.json`` of the models the current F5 row compared."""
    from mimlens.findings import rules as fd
    from mimlens.findings.folder import document_path

    models = row["compared"]
    docs = [json.loads((out / document_path("cka", models[role])).read_text()) for role in ("mim", "supervised")]
    bars_file = out / "bars.json"
    bars = json.loads(bars_file.read_text()) if bars_file.is_file() else {}
    bars = {**{m: {"passed": True} for m in models.values() if m not in bars}, **bars}
    return fd.f5_cka_v2(*docs, bars, claims(out), bar_models=[models["mim"], models["supervised"]])


def number(numbers: dict, key: str) -> str:
    value = numbers.get(key)
    return "n/a" if value is None else f"{value:.4f}"


def show(out: Path) -> None:
    from mimlens.findings import rules as fd
    from mimlens.findings.rules import RULES_VERSION

    if not (out / "findings.json").is_file():
        sys.exit(f"{out / 'findings.json'} is missing: the demo has not finished")
    version, old = written_rows(out)
    print(f"{out}: findings.json under rules version {version}; current rules version {RULES_VERSION}")
    for row in current_rows(out):
        before = old.get(row["id"], {})
        print(f"\n{row['id']}: version {version}: {before.get('verdict', '(absent)')}  ->  "
              f"version {RULES_VERSION}: {row['verdict']}")
        for label, r in ((f"v{version}", before), (f"v{RULES_VERSION}", row)):
            reason = (r.get("numbers") or {}).get("reason") if isinstance(r.get("numbers"), dict) else None
            if reason:
                print(f"  {label} reason: {reason}")
        if row["id"] == "F5" and row.get("compared", {}).keys() >= {"mim", "supervised"}:
            n = row["numbers"]
            print(f"  F5 under version 2 (fixed margin {fd.CKA_MARGIN:g}): {f5_version_2(out, row)['verdict']}; "
                  f"under version {RULES_VERSION}: SimMIM {number(n, 'SimMIM mean CKA between layers')}, "
                  f"supervised {number(n, 'supervised mean CKA between layers')}, difference "
                  f"{number(n, 'SimMIM - supervised')}, 95 % interval [{number(n, 'SimMIM - supervised low')}, "
                  f"{number(n, 'SimMIM - supervised high')}], null means "
                  f"{number(n, 'SimMIM null mean CKA between layers')} (SimMIM) and "
                  f"{number(n, 'supervised null mean CKA between layers')} (supervised)")
        outcomes = {k: v for k, v in row["numbers"].items() if k.endswith(" outcome")}
        if outcomes:
            per_task = "; ".join(f"{k[:-len(' outcome')]}: {v}" for k, v in outcomes.items())
            print(f"  v{RULES_VERSION} per task: {per_task}")


def write(out: Path) -> None:
    """Rewrite the findings and report of ``out`` (and of its masking study, or of the demo holding the study)."""
    from mimlens.demo import findings_stage, masking
    from mimlens.findings.folder import MASKING_FOLDER as FOLDER

    study = study_of(out)
    if study is not None:
        from mimlens.study.closing import findings_and_report

        findings_and_report(study, out)
        print(f"\nrewritten under the current rules: {out / 'findings.json'}, {out / 'report.html'}")
        return
    preset = preset_of(out)
    if preset.mask_settings:
        masking.write_findings_and_report(out, preset)
    elif (out / FOLDER / "findings.json").is_file():
        masking.write_findings_and_report(out / FOLDER, preset_of(out / FOLDER))  # rewrites this demo's too
    else:
        findings_stage.write_findings_and_report(out, preset)
    print(f"\nrewritten under the current rules: {out / 'findings.json'}, {out / 'report.html'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="a finished demo or study folder (or a masking study)")
    parser.add_argument("--write", action="store_true", help="then rewrite findings.json and report.html")
    args = parser.parse_args()
    show(args.out)
    if not is_masking_study(args.out) and (args.out / "masking" / "findings.json").is_file():
        print()
        show(args.out / "masking")
    if args.write:
        write(args.out)


if __name__ == "__main__":
    main()
