"""``mimlens demo --preset quick`` end to end: every promised file, findings re-derived from the runs' JSON, a
rerun that reuses every stage, and the report clean in a headless browser."""

import html
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from cli_capture import run_cli

from mimlens.cli import main
from mimlens.demo.presets import MASKING_QUICK
from mimlens.findings.rules import RULES_VERSION
from mimlens.report.blocks import decimals, fmt
from mimlens.study.spec import load_study, study_file
from mimlens.study.stages import study_stages

pytestmark = pytest.mark.slow

MODELS = ("random_init", "simmim", "supervised", "moco")


def run_of(model: str) -> str:
    """Where a model's weights are: the random initialisation is exported to weights/, the others pre-trained."""
    return f"weights/{model}" if model == "random_init" else f"pretrain/{model}"
TASKS = ("cls", "depth", "pose", "track")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "quick"
    status, printed = run_cli("demo", "--preset", "quick", "--out", out)
    assert status == 0, printed
    return SimpleNamespace(path=out, stdout=printed)


def load(path: Path):
    return json.loads(path.read_text())


def test_every_promised_file_exists(demo):
    out = demo.path
    expected = ["config.yaml", "report.html", "findings.json", "bars.json", "block_choice.json",
                "figures/block_choice.png", "figures/transfer.png",
                "figures/training_bars.png", "figures/layer_drop_depth.png", "figures/layer_drop_pose.png",
                "compare/compare.json", "compare/cka_across.json", "compare/figures/attention_distance.png",
                "compare/figures/head_kl.png", "masks/avgdist.json", "masks/figures/avgdist.png"]
    for m in MODELS:
        expected += [f"{run_of(m)}/config.yaml", f"{run_of(m)}/backbone.safetensors",
                     f"analysis/{m}/attention.json", f"analysis/{m}/cka.json",
                     f"analysis/{m}/figures/attention_distance.png", f"analysis/{m}/figures/cka_within.png"]
    expected += [f"probe/{m}/{f}" for m in MODELS for f in ("probe.json", "figures/probe_by_layer.png")]
    expected.append("figures/probe_by_layer.png")
    for m in ("simmim", "supervised", "moco"):
        expected += [f"pretrain/{m}/log.jsonl", f"pretrain/{m}/checkpoints/last.pt"]
    expected.append("pretrain/simmim/figures/simmim_reconstruction.png")
    for task in TASKS:
        for m in MODELS:
            if m == "supervised" and task in ("depth", "pose"):
                expected += [f"finetune/{task}_{m}/drop_sweep.json", f"finetune/{task}_{m}/drop_0/metrics.json",
                             f"finetune/{task}_{m}/drop_1/metrics.json", f"finetune/{task}_{m}/figures/layer_drop.png"]
            else:
                expected.append(f"finetune/{task}_{m}/metrics.json")
    missing = [p for p in expected if not (out / p).is_file()]
    assert not missing


def test_the_same_initialisation_starts_every_pretraining(demo):
    from safetensors.torch import load_file

    init = load_file(demo.path / run_of("random_init") / "backbone.safetensors")
    moco = load_file(demo.path / "pretrain" / "moco" / "backbone.safetensors")
    # MoCo v3 freezes the random patch embedding, so it still holds the shared initialisation
    assert (init["patch_embed.proj.weight"] == moco["patch_embed.proj.weight"]).all()


def test_progress_names_every_stage_with_time_left(demo):
    lines = [line for line in demo.stdout.splitlines() if line.startswith("[")]
    starts = [line for line in lines if "min left" in line]
    assert len(starts) == 31 and all("expected" in line and ": running (" in line for line in starts)
    assert lines[-1].startswith("[31/31] findings: finished in")


def test_quick_findings_all_not_judged_with_the_reason(demo):
    doc = load(demo.path / "findings.json")
    assert doc["about"]["preset"] == "quick" and doc["claims_findings"] is False
    assert doc["rules_version"] == RULES_VERSION
    assert [r["id"] for r in doc["findings"]] == ["F1", "F2", "F3", "F4", "F5", "F6", "F4-probe", "F6-probe"]
    for row in doc["findings"]:
        assert row["verdict"] == "not judged"
        assert row["numbers"]["reason"] == "quick preset: models not trained enough"
    assert doc["bars"] == load(demo.path / "bars.json")


def layer_distance(doc):
    return [float(np.mean(layer["distance_px"])) for layer in doc["layers"]]


def paired(a, b):
    """(diff, SE) of two runs' items: the mean per-item difference and sd / sqrt(n) over items both have; AP by
    the library's paired bootstrap (tested against a brute-force one in tests/tasks)."""
    assert a["ids"] == b["ids"]
    if a["statistic"] != "mean":
        from mimlens.tasks.uncertainty import compare_runs

        found = compare_runs(a, b)
        return found["diff"], (found["se"] if found["n"] > 1 else float("nan"))
    d = np.array([x - y for x, y in zip(a["values"], b["values"], strict=True) if x is not None and y is not None])
    return d.mean(), (d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan"))  # one item: no SE


def half(items, which):
    """Items at even (0: selection) or odd (1: judgement) positions; None: all items."""
    return items if which is None else {**items, "ids": items["ids"][which::2], "values": items["values"][which::2]}


def selection_score(items, sign):
    values = [v for v in items["values"][0::2] if v is not None]
    if items["statistic"] == "mean":
        return sign * float(np.mean(values))
    from mimlens.tasks.pose import keypoint_ap

    return sign * keypoint_ap(values)


def choose(candidates, sign):
    """The key of the best items section on the selection half (the first on ties); a single one as is."""
    keys = list(candidates)
    return keys[0] if len(keys) == 1 else max(keys, key=lambda k: (selection_score(candidates[k], sign),
                                                                   -keys.index(k)))


def put(found, key, a, b, sign, which=None):
    """Paired a - b (on ``which`` half) into ``found`` with SE, detectable difference and items; its outcome."""
    a, b = half(a, which), half(b, which)
    diff, se = paired(a, b)
    found[key], found[f"{key} SE"], found[f"{key} detectable"] = diff, se, (2 + 0.8416) * se
    found[f"{key} items"] = sum(x is not None and y is not None for x, y in zip(a["values"], b["values"], strict=True))
    return "holds" if sign * diff > 2 * se else "fails" if -sign * diff > 2 * se else "within errors"


def tally(found, outcomes):
    judged = [o for o in outcomes.values() if not o.startswith("not judged")]
    found.update({"tasks": len(outcomes), "tasks judged": len(judged), "tasks holding": judged.count("holds"),
                  "tasks failing": judged.count("fails"), "tasks within errors": judged.count("within errors")})
    for task, result in outcomes.items():
        found[f"{task} outcome"] = result


def expected_numbers(out: Path) -> dict[str, dict]:
    """Every number of the findings table, computed here from the runs' JSON files."""
    att = {m: load(out / "analysis" / m / "attention.json") for m in MODELS}
    sim, sup, ref = (layer_distance(att[m]) for m in ("simmim", "supervised", "random_init"))
    k = len(ref) // 2
    f1 = {"layers": len(ref), "SimMIM local layers": sum(s <= 0.9 * r for s, r in zip(sim, ref, strict=True)),
          "SimMIM mean distance px": np.mean(sim), "supervised mean distance px": np.mean(sup),
          "random-init mean distance px": np.mean(ref), "supervised lower-half distance px": np.mean(sup[:k]),
          "supervised upper-half distance px": np.mean(sup[len(ref) - k:]),
          "supervised growth / random-init distance": (np.mean(sup[len(ref) - k:]) - np.mean(sup[:k])) / np.mean(ref)}
    avg = load(out / "masks" / "avgdist.json")
    mask_patch = yaml.safe_load((out / "pretrain" / "simmim" / "config.yaml").read_text())["simmim"]["mask_patch"]
    low, high = avg["moderate_band_px"]
    f2 = {"image px": avg["img_size"], "moderate band low px": low, "moderate band high px": high,
          "settings measured": len(avg["settings"]),
          "settings in band": sum(1 for s in avg["settings"] if s["avg_dist_px"] is not None
                                  and low <= s["avg_dist_px"] <= high),
          "pre-training AvgDist px": next(s["avg_dist_px"] for s in avg["settings"]
                                          if s["mask_patch_size"] == mask_patch and s["ratio"] == 0.6)}
    f3 = {"layers": len(att["simmim"]["layers"])}
    f5 = {}
    cka = {m: load(out / "analysis" / m / "cka.json") for m in ("simmim", "supervised")}
    for m, label in (("simmim", "SimMIM"), ("supervised", "supervised")):
        for key, name in (("matrix", "mean CKA"), ("null_mean", "null mean CKA")):
            matrix = cka[m][key]
            n = len(matrix)
            off = [matrix[i][j] for i in range(n) for j in range(n) if i != j and matrix[i][j] is not None]
            f5[f"{label} {name} between layers"] = np.mean(off)
    f5["SimMIM - supervised"] = f5["SimMIM mean CKA between layers"] - f5["supervised mean CKA between layers"]
    differences = [a - b for a, b in zip(cka["simmim"]["off_diagonal_replicates"],
                                         cka["supervised"]["off_diagonal_replicates"], strict=True)
                   if a is not None and b is not None]
    low, high = np.percentile(differences, [2.5, 97.5])  # the paired replicates' 95 % percentile interval
    f5.update({"SimMIM - supervised low": low, "SimMIM - supervised high": high,
               "SimMIM - supervised replicates": len(differences),
               "SimMIM - supervised detectable": (high - low) / 2 / 1.96 * (1.96 + 0.8416)})
    f5["estimator"] = cka["simmim"]["estimator"]
    found = {"F1": f1, "F2": f2, "F3": f3, "F4": f4_numbers(out), "F5": f5, "F6": f6_numbers(out),
             **probe_numbers(out)}
    return {fid: {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in numbers.items()}
            for fid, numbers in found.items()}  # NaN (the SE of one item) is null in findings.json


def f4_numbers(out: Path) -> dict:
    f4, outcomes = {}, {}
    for task in ("depth", "pose"):
        sweep = load(out / "finetune" / f"{task}_supervised" / "drop_sweep.json")
        metric, sign = sweep["metric"], 1 if sweep["higher_is_better"] else -1
        for row in sweep["rows"]:
            f4[f"{task} {metric} K={row['drop_last']}"] = row[metric]
        random_init = load(out / "finetune" / f"{task}_random_init" / "metrics.json")
        f4[f"{task} {metric} random init"] = random_init["metrics"][metric]
        f4[f"{task} K=0 trained"] = sweep["rows"][0]["trained"]
        if not sweep["rows"][0]["trained"]:
            outcomes[task] = "not judged: no fine-tuning beats its trivial baseline by 2 SE (supervised K=0)"
            continue
        items = sweep["items"]
        if put(f4, f"{task} K=0 - random init", items["0"], random_init["items"], sign) != "holds":
            outcomes[task] = "not judged: the full model does not beat the random-init fine-tuning"
            continue
        reading = put(f4, f"{task} K=1 - K=0", items["1"], items["0"], sign)
        f4[f"{task} K=1 - K=0 reading"] = {"holds": "helps", "fails": "hurts"}.get(reading, reading)
        f4[f"{task} chosen K"] = 1  # the quick sweep has one K: no choice, all items judge it
        outcomes[task] = put(f4, f"{task} chosen K - K=0", items["1"], items["0"], sign)
    tally(f4, outcomes)
    return f4


def f6_numbers(out: Path) -> dict:
    f6, outcomes = {}, {}
    for task in TASKS:
        docs = {}
        for m, label in (("simmim", "SimMIM"), ("supervised", "supervised"), ("random_init", "random init")):
            run = out / "finetune" / f"{task}_{m}"
            docs[label] = load(run / "drop_0" / "metrics.json" if (run / "drop_sweep.json").is_file()
                               else run / "metrics.json")
            primary = docs[label]["primary"]
            f6[f"{task} {primary['name']} {label}"] = docs[label]["metrics"][primary["name"]]
            if label != "random init":
                f6[f"{task} {label} trained"] = docs[label]["trained"]
        sign = 1 if primary["higher_is_better"] else -1
        untrained = [label for label in ("SimMIM", "supervised") if not docs[label]["trained"]]
        if untrained:
            outcomes[task] = f"not judged: no fine-tuning beats its trivial baseline by 2 SE ({', '.join(untrained)})"
            continue
        found = {(a, b): put(f6, f"{task} {a} - {b}", docs[a]["items"], docs[b]["items"], sign)
                 for a, b in (("SimMIM", "random init"), ("supervised", "random init"), ("SimMIM", "supervised"))}
        if "holds" not in (found["SimMIM", "random init"], found["supervised", "random init"]):
            outcomes[task] = "not judged: neither pre-training beats the random-init fine-tuning"
            continue
        outcomes[task] = found["SimMIM", "supervised"]
    tally(f6, outcomes)
    return f6


def combined(parts):
    return "fails" if "fails" in parts else "holds" if all(p == "holds" for p in parts) else "within errors"


def probe_numbers(out: Path) -> dict[str, dict]:
    """The F4-probe and F6-probe numbers from the two models' probe.json: blocks chosen on the selection half
    (even positions), judged on the other half."""
    docs = {label: load(out / "probe" / m / "probe.json") for m, label in (("simmim", "SimMIM"),
                                                                           ("supervised", "supervised"))}
    f4, f6, out4, out6 = {}, {}, {}, {}
    for task in ("depth", "pose", "track"):
        specs = {label: doc["tasks"][task] for label, doc in docs.items()}
        metric, sign = specs["SimMIM"]["primary"], 1 if specs["SimMIM"]["higher_is_better"] else -1

        def items(label, row, specs=specs):
            return {**specs[label]["items"], "values": row["values"]}

        parts = []
        for label, direction in (("supervised", 1), ("SimMIM", -1)):
            rows = specs[label]["rows"]
            chosen = rows[choose({i: items(label, r) for i, r in enumerate(rows[:-1])}, sign)]
            f4[f"{task} {label} chosen block"], f4[f"{task} {label} chosen {metric}"] = chosen["block"], chosen[metric]
            f4[f"{task} {label} last {metric}"] = rows[-1][metric]
            key = f"{task} {label} earlier - last"
            part = put(f4, key, items(label, chosen), items(label, rows[-1]), direction * sign,
                       1 if len(rows) > 2 else None)
            f4[f"{task} {label} part"] = part
            parts.append(part)
        out4[task] = combined(parts)
        parts = []
        for where in ("best", "last"):
            picked = {label: (specs[label]["rows"][choose({i: items(label, r) for i, r in
                                                           enumerate(specs[label]["rows"])}, sign)]
                              if where == "best" else specs[label]["rows"][-1]) for label in specs}
            for label, row in picked.items():
                f6[f"{task} {label} {where} {metric}"], f6[f"{task} {label} {where} block"] = row[metric], row["block"]
            key = f"{task} SimMIM - supervised at {where}"
            which = 1 if where == "best" and min(len(s["rows"]) for s in specs.values()) > 1 else None
            parts.append(put(f6, key, items("SimMIM", picked["SimMIM"]), items("supervised", picked["supervised"]),
                             sign, which))
        out6[task] = combined(parts)
    tally(f4, out4)
    tally(f6, out6)
    return {"F4-probe": f4, "F6-probe": f6}


def findings_cells(page: str) -> dict[str, dict[str, list[str]]]:
    """The numbers table of each finding on the page: row label -> the texts of its cells."""
    table = page[page.index('<table class="findings">'):page.index('<nav class="toc">')]
    found = {}
    for part in table.split('<tr id="finding-')[1:]:
        rows = re.findall(r"<tr><th>([^<]*)</th>((?:<td[^>]*>[^<]*</td>)+)</tr>", part)
        fid = part[:part.index('"')].upper().replace("-PROBE", "-probe")
        found[fid] = {html.unescape(label): [html.unescape(c) for c in re.findall(r"<td[^>]*>([^<]*)</td>", cells)]
                      for label, cells in rows}
    return found


def test_every_finding_number_comes_from_the_runs_json(demo):
    expected = expected_numbers(demo.path)
    cells = findings_cells((demo.path / "report.html").read_text())
    for row in load(demo.path / "findings.json")["findings"]:
        numbers = {k: v for k, v in row["numbers"].items() if k != "reason"}
        assert set(numbers) == set(expected[row["id"]]), row["id"]
        for key, value in expected[row["id"]].items():
            if isinstance(value, str):
                assert numbers[key] == value
            elif value is None:
                assert numbers[key] is None, (row["id"], key)
            else:
                assert numbers[key] == pytest.approx(float(value), rel=1e-9, abs=1e-12), (row["id"], key)
        # the page shows every number, laid out one row per quantity, each row with one precision
        layout = row["table"]["rows"]
        assert {k for _, *keys in layout for k in keys if k} == set(numbers), row["id"]
        assert set(cells[row["id"]]) == {label for label, *_ in layout}, row["id"]
        for label, *keys in layout:
            values = [expected[row["id"]][k] if k else None for k in keys]
            places = decimals(values)
            assert cells[row["id"]][label] == [fmt(v, places) if isinstance(v, (int, float)) else fmt(v)
                                               for v in values], (row["id"], label)


def test_rerun_reuses_every_stage(demo):
    before = {p: p.stat().st_mtime_ns for p in (demo.path / "pretrain").rglob("backbone.safetensors")}
    status, printed = run_cli("demo", "--preset", "quick", "--out", demo.path)
    assert status == 0
    assert printed.count("done before, reused") == 30  # all but the findings, which are judged again
    assert before == {p: p.stat().st_mtime_ns for p in (demo.path / "pretrain").rglob("backbone.safetensors")}


def test_demo_report_opens_with_the_findings_and_cleanly_in_a_browser(demo, browser):
    page = (demo.path / "report.html").read_text()
    # the findings and their figures come first; contents, stages and the folded runs after
    findings, contents, stages = (page.index(s) for s in ('<table class="findings">', '<nav class="toc">',
                                                           "<th>stage</th>"))
    assert findings < contents < stages and page.count('<img class="thumb"') == 10  # F4-probe, F6-probe: 1 each
    # the runs, the 4 probe runs, the stages and files, then each model's numbers by block (which block to transfer)
    assert page.count('<details class="fold">') == 29 + 4 + 2 + 4
    assert "quick preset: models not trained enough" in page and "Training bars" in page
    assert "Comparison (1 run)" in page and "/stages" not in page and str(demo.path) not in page
    assert not re.search(r"\b1 [a-z]+s\b", re.sub(r"<[^>]+>", " ", page))  # "1 image", never "1 images"
    found = browser(demo.path / "report.html")
    assert found["images"] > 20 and found["broken"] == [] and found["errors"] == [] and found["console"] == []
    assert found["width"] == 1280 and found["cut"] == []  # the findings table and its figures fit the page


def test_mimlens_report_renders_the_demo_directory_as_the_demo_does(demo, tmp_path, browser):
    status, _ = run_cli("report", demo.path, "--out", tmp_path / "rep")
    assert status == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.count('class="verdict not-judged"') == 8 and "About this study" in page

    def headings(text):
        return re.findall(r"<title>[^<]*</title>|<h[234] id=\"[^\"]*\">[^<]*</h[234]>", text)

    assert headings(page) == headings((demo.path / "report.html").read_text())
    found = browser(tmp_path / "rep" / "report.html")
    assert found["broken"] == [] and found["errors"] == []


def test_another_kind_of_directory_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--preset", "quick", "--out", str(tmp_path), "--fresh"]) == 2
    assert "exists and is not a demo directory" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").is_file()


def test_parallel_stages_wait_for_what_they_read_and_give_the_same_files(demo, tmp_path):
    out = tmp_path / "parallel"
    status, printed = run_cli("demo", "--preset", "quick", "--out", out, "--parallel", "2")
    assert status == 0, printed
    assert "2 at a time, 1 process(es) each, cpu, pool" in printed and printed.count("finished in") == 31
    records = {p.stem: load(p) for p in (out / "stages").glob("*.json")}
    assert len(records) == 31 and all(r["finished"] for r in records.values())
    for stage in study_stages(load_study(study_file("demo-quick")), out):
        for need in stage.needs:
            assert records[need]["finished_at"] <= records[stage.name]["started_at"], (stage.name, need)
    overlapping = sum(a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]
                      for a in records.values() for b in records.values() if a is not b)
    assert overlapping > 0  # two stages really ran at once
    ours = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if p.is_file() and not {"stages", "logs"} & set(p.parts))
    theirs = sorted(str(p.relative_to(demo.path)) for p in demo.path.rglob("*")
                    if p.is_file() and not {"stages", "logs"} & set(p.parts))
    assert ours == theirs


def test_a_stage_failing_in_a_worker_stops_what_needs_it_naming_it(tmp_path, capsys):
    status = main(["demo", "--preset", "quick", "--out", str(tmp_path / "d"), "--parallel", "2",
                   "--device", "no-such-device"])
    printed = capsys.readouterr()
    assert status == 2 and "did not finish: " in printed.err and "pretrain_simmim" in printed.err
    assert "pretrain_simmim: FAILED" in printed.out and "no-such-device" in printed.out
    assert "Traceback" not in printed.out + printed.err
    assert main(["demo", "--preset", "quick", "--out", str(tmp_path / "e"), "--parallel", "0"]) == 2
    assert "--parallel 0: expected at least 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- the masking study


@pytest.fixture(scope="module")
def study(demo, tmp_path_factory):
    """``mimlens demo --preset masking-quick`` inside a copy of the quick demo's folder (OUT/masking)."""
    joined = tmp_path_factory.mktemp("joined") / "quick"
    shutil.copytree(demo.path, joined)
    status, printed = run_cli("demo", "--preset", "masking-quick", "--out", joined / "masking")
    assert status == 0, printed
    return SimpleNamespace(path=joined / "masking", demo=joined, stdout=printed)


def test_the_quick_study_writes_every_run_and_figure(study):
    names = [s.name for s in MASKING_QUICK.mask_settings]
    expected = ["findings.json", "report.html", "bars.json", "masks/avgdist.json", "figures/f2_transfer.png",
                "figures/f2_attention.png", "figures/training_bars.png"]
    for n in names:
        expected += [f"pretrain/{n}/backbone.safetensors", f"analysis/{n}/attention.json", f"probe/{n}/probe.json",
                     f"finetune/depth_{n}/metrics.json", f"finetune/pose_{n}/metrics.json"]
    assert [p for p in expected if not (study.path / p).is_file()] == []
    for n, s in zip(names, MASKING_QUICK.mask_settings, strict=True):
        mask = load(study.path / "bars.json")[n]["mask"]
        assert (mask["mask_patch"], mask["ratio"]) == (s.mask_patch, s.ratio)  # each run masks its own way


def test_every_number_of_the_quick_f2_row_comes_from_the_runs(study):
    out = study.path
    (row,) = load(out / "findings.json")["findings"]
    assert row["id"] == "F2" and row["verdict"] == "not judged"
    numbers = row["numbers"]
    assert numbers["reason"] == "quick preset: models not trained enough"
    avgdist, bars = load(out / "masks" / "avgdist.json"), load(out / "bars.json")
    for s in MASKING_QUICK.mask_settings:
        n = s.name
        measured = next(r["avg_dist_px"] for r in avgdist["settings"]
                        if r["mask_patch_size"] == s.mask_patch and r["ratio"] == s.ratio)
        assert numbers[f"{n} AvgDist px"] == pytest.approx(measured)
        assert numbers[f"{n} masked L1"] == pytest.approx(bars[n]["masked_l1"])
        assert numbers[f"{n} nearest fill L1"] == pytest.approx(bars[n]["nearest_fill_l1"])
        assert numbers[f"{n} mean fill L1"] == pytest.approx(bars[n]["mean_fill_l1"])
        attention = load(out / "analysis" / n / "attention.json")
        assert numbers[f"{n} mean attention px"] == pytest.approx(np.mean(layer_distance(attention)))
        for task, metric in (("depth", "rmse"), ("pose", "ap")):
            doc = load(out / "finetune" / f"{task}_{n}" / "metrics.json")
            assert numbers[f"{task} {metric} {n}"] == pytest.approx(doc["metrics"][metric])
            assert numbers[f"{task} {n} trained"] == doc["trained"]
        probe = load(out / "probe" / n / "probe.json")["tasks"]
        assert numbers[f"probe depth {n}"] == pytest.approx(min(r["rmse"] for r in probe["depth"]["rows"]))
        assert numbers[f"probe track {n}"] == pytest.approx(max(r["suc"] for r in probe["track"]["rows"]))
    band = avgdist["moderate_band_px"]
    dist = {s.name: numbers[f"{s.name} AvgDist px"] for s in MASKING_QUICK.mask_settings}
    order = sorted(dist, key=dist.get)
    inside = [n for n in order if band[0] <= dist[n] <= band[1]]
    outside = [n for n in order if n not in inside]
    for task, metric in (("depth", "rmse"), ("pose", "ap")):
        docs = {n: load(out / "finetune" / f"{task}_{n}" / "metrics.json") for n in order}
        sign = 1 if metric == "ap" else -1
        if not inside or not outside:
            assert numbers[f"{task} outcome"].startswith("not judged") and f"{task} band - outside" not in numbers
            continue
        chosen = [choose({n: docs[n]["items"] for n in names}, sign) for names in (inside, outside)]
        assert [numbers[f"{task} chosen in band"], numbers[f"{task} chosen outside band"]] == chosen
        if all(docs[n]["trained"] is False for n in chosen):
            assert f"{task} band - outside" not in numbers
            continue
        found = {}
        which = 1 if len(inside) > 1 or len(outside) > 1 else None
        put(found, "d", docs[chosen[0]]["items"], docs[chosen[1]]["items"], sign, which)
        for suffix in ("", " SE", " detectable", " items"):
            assert numbers[f"{task} band - outside{suffix}"] == pytest.approx(found[f"d{suffix}"], abs=1e-12)
    assert "masking-quick" in (out / "report.html").read_text()


def test_the_study_decides_the_f2_row_of_the_demo_it_joins(study):
    (row,) = load(study.path / "findings.json")["findings"]
    joined = next(r for r in load(study.demo / "findings.json")["findings"] if r["id"] == "F2")
    assert joined["numbers"] == {**row["numbers"], "masking study": "masking/report.html"}
    assert joined["verdict"] == row["verdict"] and joined["rule"] == row["rule"]
    assert "masking/figures/f2_transfer.png" in joined["figures"]
    page = (study.demo / "report.html").read_text()
    assert "masking/report.html" in page
    # the masking study's runs stay in its own report
    assert page.count('<details class="fold">') == 29 + 4 + 2 + 4


def test_a_rerun_of_the_study_reuses_every_stage(study):
    status, printed = run_cli("demo", "--preset", "masking-quick", "--out", study.path)
    assert status == 0
    assert printed.count("done before, reused") == 5 * len(MASKING_QUICK.mask_settings) + 2  # + masks, bars
