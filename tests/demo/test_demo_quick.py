"""``mimlens demo --preset quick`` end to end: every promised file, findings re-derived from the runs' JSON, a
rerun that reuses every stage, and the report clean in a headless browser."""

import contextlib
import html
import io
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from mimlens.cli import main
from mimlens.demo.pipeline import build_stages
from mimlens.demo.presets import MASKING_QUICK, QUICK
from mimlens.report.blocks import decimals, fmt

pytestmark = pytest.mark.slow

MODELS = ("random_init", "simmim", "supervised", "moco")
TASKS = ("cls", "depth", "pose", "track")


def run_cli(*argv):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main([str(a) for a in argv])
    return status, printed.getvalue()


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
    expected = ["config.yaml", "report.html", "findings.json", "bars.json", "figures/transfer.png",
                "figures/training_bars.png", "figures/layer_drop_depth.png", "figures/layer_drop_pose.png",
                "compare/compare.json", "compare/cka_across.json", "compare/figures/attention_distance.png",
                "compare/figures/head_kl.png", "masks/avgdist.json", "masks/figures/avgdist.png"]
    for m in MODELS:
        expected += [f"pretrain/{m}/config.yaml", f"pretrain/{m}/backbone.safetensors",
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

    init = load_file(demo.path / "pretrain" / "random_init" / "backbone.safetensors")
    moco = load_file(demo.path / "pretrain" / "moco" / "backbone.safetensors")
    # MoCo v3 freezes the random patch embedding, so it still holds the shared initialisation
    assert (init["patch_embed.proj.weight"] == moco["patch_embed.proj.weight"]).all()


def test_progress_names_every_stage_with_time_left(demo):
    lines = [line for line in demo.stdout.splitlines() if line.startswith("[")]
    starts = [line for line in lines if "min left" in line]
    assert len(starts) == 31 and all("expected" in line for line in starts)
    assert lines[-1].startswith("[32/32] findings and report")


def test_quick_findings_all_inconclusive_with_the_reason(demo):
    doc = load(demo.path / "findings.json")
    assert doc["preset"] == "quick" and doc["claims_findings"] is False
    assert [r["id"] for r in doc["findings"]] == ["F1", "F2", "F3", "F4", "F5", "F6", "F4-probe", "F6-probe"]
    for row in doc["findings"]:
        assert row["verdict"] == "inconclusive"
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
        return found["diff"], found["se"]
    d = np.array([x - y for x, y in zip(a["values"], b["values"], strict=True) if x is not None and y is not None])
    return d.mean(), d.std(ddof=1) / np.sqrt(len(d))


def expected_numbers(out: Path) -> dict[str, dict]:
    """Every number of the findings table, computed here from the runs' JSON files."""
    att = {m: load(out / "analysis" / m / "attention.json") for m in MODELS}
    sim, sup, ref = (layer_distance(att[m]) for m in ("simmim", "supervised", "random_init"))
    upper = range(len(ref) // 2, len(ref))
    f1 = {"layers": len(ref), "SimMIM local layers": sum(s <= 0.9 * r for s, r in zip(sim, ref, strict=True)),
          "SimMIM mean distance px": np.mean(sim), "supervised mean distance px": np.mean(sup),
          "random-init mean distance px": np.mean(ref),
          "SimMIM upper-half gap to uniform": np.mean([(ref[i] - sim[i]) / ref[i] for i in upper]),
          "supervised upper-half gap to uniform": np.mean([(ref[i] - sup[i]) / ref[i] for i in upper])}
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
    f4 = {}
    for task in ("depth", "pose"):
        sweep = load(out / "finetune" / f"{task}_supervised" / "drop_sweep.json")
        for row in sweep["rows"]:
            f4[f"{task} {sweep['metric']} K={row['drop_last']}"] = row[sweep["metric"]]
        random_init = load(out / "finetune" / f"{task}_random_init" / "metrics.json")
        f4[f"{task} {sweep['metric']} random init"] = random_init["metrics"][sweep["metric"]]
        for key, (a, b) in {"K=0 - random init": (sweep["items"]["0"], random_init["items"]),
                            "K=1 - K=0": (sweep["items"]["1"], sweep["items"]["0"])}.items():
            f4[f"{task} {key}"], f4[f"{task} {key} SE"] = paired(a, b)
        f4[f"{task} K=0 trained"] = sweep["rows"][0]["trained"]
        sign = 1 if sweep["higher_is_better"] else -1
        learned = sign * f4[f"{task} K=0 - random init"] > 2 * f4[f"{task} K=0 - random init SE"]
        f4["tasks judged"] = f4.get("tasks judged", 0) + int(sweep["rows"][0]["trained"] and learned)
    f5 = {}
    for m, label in (("simmim", "SimMIM"), ("supervised", "supervised")):
        matrix = load(out / "analysis" / m / "cka.json")["matrix"]
        n = len(matrix)
        off = [matrix[i][j] for i in range(n) for j in range(n) if i != j and matrix[i][j] is not None]
        f5[f"{label} mean CKA between layers"] = np.mean(off)
    f5["estimator"] = load(out / "analysis" / "simmim" / "cka.json")["estimator"]
    f6, wins, counted = {}, 0, 0
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
        better = {}
        for a, b in (("SimMIM", "random init"), ("supervised", "random init"), ("SimMIM", "supervised")):
            diff, se = paired(docs[a]["items"], docs[b]["items"])
            f6[f"{task} {a} - {b}"], f6[f"{task} {a} - {b} SE"] = diff, se
            better[a, b] = sign * diff > 2 * se
        trained = docs["SimMIM"]["trained"] and docs["supervised"]["trained"]
        if trained and (better["SimMIM", "random init"] or better["supervised", "random init"]):
            counted += 1
            wins += better["SimMIM", "supervised"]
    f6.update({"SimMIM wins": wins, "tasks counted": counted})
    return {"F1": f1, "F2": f2, "F3": f3, "F4": f4, "F5": f5, "F6": f6, **probe_numbers(out)}


def probe_numbers(out: Path) -> dict[str, dict]:
    """The F4-probe and F6-probe numbers from the two models' probe.json."""
    docs = {label: load(out / "probe" / m / "probe.json") for m, label in (("simmim", "SimMIM"),
                                                                           ("supervised", "supervised"))}
    f4, f6 = {}, {}
    holds4 = holds6 = within4 = within6 = 0
    for task in ("depth", "pose", "track"):
        rows = {}
        for label, doc in docs.items():
            spec = doc["tasks"][task]
            metric, sign = spec["primary"], 1 if spec["higher_is_better"] else -1
            best = max(spec["rows"], key=lambda r: (sign * r[metric], -r["block"]))
            last = spec["rows"][-1]
            rows[label] = (spec, best, last)
            f4[f"{task} {label} best block"] = best["block"]
            f4[f"{task} {label} best {metric}"] = best[metric]
            f4[f"{task} {label} last {metric}"] = last[metric]
            diff, se = paired({**spec["items"], "values": best["values"]}, {**spec["items"], "values": last["values"]})
            f4[f"{task} {label} best - last"], f4[f"{task} {label} best - last SE"] = diff, se
            rows[label] += (best["block"] != last["block"], sign * diff > 2 * se)
        sup, sim = rows["supervised"], rows["SimMIM"]
        outcome = "fails" if sim[4] or not sup[3] else ("holds" if sup[4] else "within errors")
        f4[f"{task} outcome"] = outcome
        holds4, within4 = holds4 + (outcome == "holds"), within4 + (outcome == "within errors")
        won, lost = [], []
        for where, pick in (("best", 1), ("last", 2)):
            a, b = sim[pick], sup[pick]
            f6[f"{task} SimMIM {where} {metric}"], f6[f"{task} supervised {where} {metric}"] = a[metric], b[metric]
            diff, se = paired({**sim[0]["items"], "values": a["values"]}, {**sup[0]["items"], "values": b["values"]})
            f6[f"{task} SimMIM - supervised at {where}"], f6[f"{task} SimMIM - supervised at {where} SE"] = diff, se
            won.append(sign * diff > 2 * se)
            lost.append(-sign * diff > 2 * se)
        outcome = "fails" if any(lost) else ("holds" if all(won) else "within errors")
        f6[f"{task} outcome"] = outcome
        holds6, within6 = holds6 + (outcome == "holds"), within6 + (outcome == "within errors")
    f4.update({"tasks": 3, "tasks holding": holds4, "tasks within errors": within4})
    f6.update({"tasks": 3, "tasks holding": holds6, "tasks within errors": within6})
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
    assert printed.count("done before, reused") == 31
    assert before == {p: p.stat().st_mtime_ns for p in (demo.path / "pretrain").rglob("backbone.safetensors")}


def test_demo_report_opens_with_the_findings_and_cleanly_in_a_browser(demo, browser):
    page = (demo.path / "report.html").read_text()
    # the findings and their figures come first; contents, stages and the folded runs after
    findings, contents, stages = (page.index(s) for s in ('<table class="findings">', '<nav class="toc">',
                                                           "<th>stage</th>"))
    assert findings < contents < stages and page.count('<img class="thumb"') == 10  # F4-probe, F6-probe: 1 each
    assert page.count('<details class="fold">') == 29 + 4 + 2  # the runs, the 4 probe runs, then the stages and files
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
    assert page.count('class="verdict inconclusive"') == 8 and "About this demo" in page

    def headings(text):
        return re.findall(r"<title>[^<]*</title>|<h[234] id=\"[^\"]*\">[^<]*</h[234]>", text)

    assert headings(page) == headings((demo.path / "report.html").read_text())
    found = browser(tmp_path / "rep" / "report.html")
    assert found["broken"] == [] and found["errors"] == []


def test_another_kind_of_directory_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--preset", "quick", "--out", str(tmp_path), "--fresh"]) == 2
    assert "is not a demo directory" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").is_file()


def test_parallel_stages_wait_for_what_they_read_and_give_the_same_files(demo, tmp_path):
    out = tmp_path / "parallel"
    status, printed = run_cli("demo", "--preset", "quick", "--out", out, "--parallel", "2")
    assert status == 0, printed
    assert "2 at a time, 1 torch thread(s) each" in printed and printed.count("finished in") == 31
    records = {p.stem: load(p) for p in (out / "stages").glob("*.json")}
    assert len(records) == 31 and all(r["finished"] for r in records.values())
    for stage in build_stages(QUICK, out):
        for need in stage.needs:
            assert records[need]["finished_at"] <= records[stage.name]["started_at"], (stage.name, need)
    overlapping = sum(a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]
                      for a in records.values() for b in records.values() if a is not b)
    assert overlapping > 0  # two stages really ran at once
    ours = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "stages" not in p.parts)
    theirs = sorted(str(p.relative_to(demo.path)) for p in demo.path.rglob("*")
                    if p.is_file() and "stages" not in p.parts)
    assert ours == theirs


def test_a_stage_failing_in_a_worker_stops_the_demo_naming_it(tmp_path, capsys):
    status = main(["demo", "--preset", "quick", "--out", str(tmp_path / "d"), "--parallel", "2",
                   "--device", "no-such-device"])
    err = capsys.readouterr().err
    assert status == 2 and "stage pretrain_" in err and "no-such-device" in err and "Traceback" not in err
    assert main(["demo", "--preset", "quick", "--out", str(tmp_path / "e"), "--parallel", "0"]) == 2
    assert "parallel must be at least 1" in capsys.readouterr().err


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
    assert row["id"] == "F2" and row["verdict"] == "inconclusive"
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
    for task, metric in (("depth", "rmse"), ("pose", "ap")):
        docs = {s.name: load(out / "finetune" / f"{task}_{s.name}" / "metrics.json")
                for s in MASKING_QUICK.mask_settings}
        sign = 1 if metric == "ap" else -1
        best = max(docs, key=lambda n: sign * docs[n]["metrics"][metric])
        assert numbers[f"{task} best setting"] == best
        for n in docs:
            if n != best:
                diff, se = paired(docs[best]["items"], docs[n]["items"])
                assert numbers[f"{task} best - {n}"] == pytest.approx(diff, abs=1e-12)
                assert numbers[f"{task} best - {n} SE"] == pytest.approx(se, abs=1e-12)
    assert "masking-quick" in (out / "report.html").read_text()


def test_the_study_decides_the_f2_row_of_the_demo_it_joins(study):
    (row,) = load(study.path / "findings.json")["findings"]
    joined = next(r for r in load(study.demo / "findings.json")["findings"] if r["id"] == "F2")
    assert joined["numbers"] == {**row["numbers"], "masking study": "masking/report.html"}
    assert joined["verdict"] == row["verdict"] and joined["rule"] == row["rule"]
    assert "masking/figures/f2_transfer.png" in joined["figures"]
    page = (study.demo / "report.html").read_text()
    assert "masking/report.html" in page
    assert page.count('<details class="fold">') == 29 + 4 + 2  # the study's runs stay in the study's own report


def test_a_rerun_of_the_study_reuses_every_stage(study):
    status, printed = run_cli("demo", "--preset", "masking-quick", "--out", study.path)
    assert status == 0
    assert printed.count("done before, reused") == 5 * len(MASKING_QUICK.mask_settings) + 2  # + masks, bars
