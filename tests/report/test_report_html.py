"""The HTML report builder: blocks, the run-directory kinds it recognises, and what it writes next to itself."""

import base64
import io
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mimlens.errors import MimlensError
from mimlens.report.blocks import fmt, json_table, png_data_uri, table
from mimlens.report.figures_training import curve_series, read_log
from mimlens.report.html import Section, build_report, findings_table, render_page
from mimlens.report.summary import LAYER_COLUMNS, attention_layer_rows, text_table


def png_bytes(width=20, height=10, colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


class Page(HTMLParser):
    """Collects what the tests look at: images, links, headings, element ids, scripts and stylesheets."""

    def __init__(self, text):
        super().__init__()
        self.images, self.links, self.ids, self.scripts, self.external = [], [], [], 0, []
        self.headings, self.heading_ids, self.folded, self._heading = [], [], 0, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "a":
            self.links.append(attrs.get("href", ""))
        if tag == "script":
            self.scripts += 1
        if tag == "link" or (tag in ("img", "script", "iframe") and not attrs.get("src", "").startswith("data:")):
            self.external.append((tag, attrs))
        if tag in ("h2", "h3", "h4"):
            self._heading = [tag, ""]
            self.heading_ids.append((tag, attrs.get("id")))
        if tag == "details" and attrs.get("class") == "fold":
            self.folded += 1

    def handle_data(self, data):
        if self._heading is not None:
            self._heading[1] += data

    def handle_endtag(self, tag):
        if self._heading is not None and tag == self._heading[0]:
            self.headings.append(tuple(self._heading))
            self._heading = None


def attention_doc(model="vit-micro-32", weights="random init", depth=2):
    layers = []
    for i in range(depth):
        layers.append({"name": f"blocks.{i}", "stage": 0, "num_heads": 2, "grid": [4, 4], "stride_px": [8, 8],
                       "num_keys": 17, "distance_px": [10.0 + i, 12.0 + i], "distance_frac": [0.3, 0.4],
                       "entropy": [2.0, 2.5], "entropy_norm": [0.7, 0.9], "head_kl": [[0.0, 0.5], [0.7, 0.0]],
                       "head_kl_mean": 0.6, "uniform": {"distance_px": 16.06, "distance_frac": 0.5,
                                                        "entropy": math.log(16), "entropy_norm": 1.0}})
    return {"model": model, "weights": weights, "num_images": 6, "image_size": [32, 32], "prefix_policy": "renorm",
            "dtype": "float32", "data": "synthetic", "layers": layers}


def write_run(path: Path, files: dict) -> Path:
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        elif isinstance(content, str):
            target.write_text(content)
        else:
            target.write_text(json.dumps(content))
    return path


@pytest.fixture
def runs(tmp_path):
    """One directory of every kind the report recognises, plus a demo directory holding nested runs."""
    log = "".join(json.dumps({"step": s, "epoch": 0, "lr": 1e-3, "loss": 1.0 / (s + 1), "images_per_s": 90.0}) + "\n"
                  for s in range(1, 6)) + json.dumps({"epoch": 0, "epoch_end": True, "loss": 0.3}) + "\n"
    cka = {"estimator": "minibatch linear CKA", "unit": "image", "num_images": 6, "layers_a": ["blocks.0", "blocks.1"],
           "layers_b": ["blocks.0", "blocks.1"], "matrix": [[1.0, 0.8], [0.8, 1.0]]}
    analysis = write_run(tmp_path / "analysis", {
        "attention.json": attention_doc(), "cka.json": cka, "config.yaml": "model: {spec: vit-micro-32}\n",
        "attention.csv": "layer,head,metric,value\n", "figures/attention_distance.png": png_bytes(),
        "figures/head_kl.png": png_bytes(), "figures/cka_within.png": png_bytes(),
        "figures/extra_view.png": png_bytes(),
    })
    compare = write_run(tmp_path / "compare", {
        "compare.json": {"data": "synthetic", "num_images": 6, "models": [
            {"label": "a", "model": "vit-micro-32", "weights": "random init", "attention": "attention/a.json"},
            {"label": "b", "model": "x.pt", "weights": "timm checkpoint x.pt", "attention": "attention/b.json"}]},
        "attention/a.json": attention_doc("vit-micro-32"), "attention/b.json": attention_doc("x.pt", "timm checkpoint"),
        "cka_across.json": {"pairs": [{**cka, "model_a": "a", "model_b": "b"}]},
        "figures/cka_across.png": png_bytes(), "figures/attention_distance.png": png_bytes(),
    })
    demo = tmp_path / "demo"
    write_run(demo, {"findings.json": [
        {"id": "F1", "statement": "MIM brings locality", "verdict": "reproduced", "numbers": {"simmim px": 12.5}},
        {"id": "F3", "statement": "heads stay diverse", "verdict": "inconclusive", "numbers": "kl 0.1 vs 0.1"}]})
    write_run(demo / "pretrain_simmim", {"log.jsonl": log, "config.yaml": "objective: simmim\nmodel: {name: vit}\n",
                                         "figures/simmim_reconstruction.png": png_bytes()})
    write_run(demo / "finetune_depth", {
        "config.yaml": "task: depth\n",
        "metrics.json": {"task": "depth", "init": "runs/simmim", "drop_last": 0,
                         "primary": {"name": "rmse", "value": 0.31, "higher_is_better": False},
                         "metrics": {"rmse": 0.31, "delta1": 0.9}, "variant": {"averaging": "per image"}},
        "drop_sweep.json": {"task": "depth", "metric": "rmse", "rows": [{"drop_last": 0, "rmse": 0.31},
                                                                        {"drop_last": 2, "rmse": 0.29}]},
        "figures/layer_drop.png": png_bytes()})
    write_run(demo / "masks", {
        "avgdist.json": {"img_size": 32, "num_masks": 5, "convention": "pixel centres", "moderate_band_px": [1.4, 2.9],
                         "settings": [{"mask_patch_size": 8, "ratio": 0.6, "avg_dist_px": 3.1}]},
        "figures/avgdist.png": png_bytes()})
    return {"analysis": analysis, "compare": compare, "demo": demo}


def test_report_of_every_kind_is_one_self_contained_file(runs, tmp_path):
    out = build_report([runs["analysis"], runs["compare"], runs["demo"]], tmp_path / "out" / "report.html",
                       title="All kinds")
    text = out.read_text()
    assert "Findings rules version 1 (docs/findings.md)" in text  # a findings.json without a version
    page = Page(text)
    titles = [t for _, t in page.headings]
    for expected in ("Analysis: vit-micro-32", "Attention distance (F1)", "Head diversity (F3)", "Per-layer numbers",
                     "CKA between layers (F5)", "Other figures", "Comparison: a vs b", "CKA between models (F5)",
                     "Findings: demo", "Pre-training: demo/pretrain_simmim (simmim)", "Training curves",
                     "Reconstruction", "Fine-tuning: demo/finetune_depth (depth)", "Metrics (F4, F6)",
                     "Dropping the last blocks (F4)", "Masking: AvgDist (demo/masks)"):
        assert expected in titles
    assert "Attention entropy (F3)" not in titles  # no figure, no empty section
    assert page.scripts == 0 and page.external == []
    # analysis: 4 own figures; compare: 2; pretrain: reconstruction + curves drawn from log.jsonl; layer drop;
    # masks: 1
    assert len(page.images) == 4 + 2 + 2 + 1 + 1
    assert "Other figures" not in [t for _, t in page.headings[page.headings.index(("h3", "Comparison: a vs b")):]]
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    # the contents link to every top-level heading; the runs are folded, grouped by kind, and not listed
    anchors = [link[1:] for link in page.links if link.startswith("#")]
    assert set(anchors) <= set(page.ids) and len(anchors) == len(set(anchors))
    assert {i for tag, i in page.heading_ids if tag == "h2" and i} <= set(anchors)
    assert page.folded == 6 and len(anchors) == 7  # findings, about; five kinds of run. Folded: 5 runs, a Files list
    assert ("h2", "Comparison (1 run)") in page.headings and ("h2", "Analysis (1 run)") in page.headings
    # every file link points to a copy next to the report
    files = [link for link in page.links if not link.startswith("#")]
    assert "analysis/attention.json" in files and "demo/masks/avgdist.json" in files
    assert "demo/pretrain_simmim/figures/training_curves.png" in files
    for link in files:
        assert (out.parent / link).is_file(), link
    assert (out.parent / "analysis" / "figures" / "cka_within.png").read_bytes() == png_bytes()


def test_analysis_numbers_and_random_init_notice_reach_the_page(runs, tmp_path):
    text = build_report([runs["analysis"]], tmp_path / "r.html").read_text()
    assert "random initialisation" in text
    # per-layer table: mean over heads, uniform references, head-KL mean; each column with one precision
    assert '<td class="num">11.00</td>' in text and '<td class="num">12.00</td>' in text
    assert '<td class="num">16.06</td>' in text and '<td class="num">2.250</td>' in text
    assert '<td class="num">2.773</td>' in text and '<td class="num">0.6000</td>' in text
    # CKA facts: mean of the off-diagonal cells, first vs last block
    assert "mean CKA between different layers</dt><dd>0.8" in text


def test_report_written_inside_a_run_directory_copies_nothing(runs):
    before = sorted(p for p in runs["analysis"].rglob("*"))
    out = build_report([runs["analysis"]], runs["analysis"] / "report.html")
    after = sorted(p for p in runs["analysis"].rglob("*"))
    assert [p for p in after if p not in before] == [out]
    assert 'href="attention.json"' in out.read_text()


def test_missing_or_empty_run_directories_are_clean_errors(tmp_path):
    with pytest.raises(MimlensError, match="does not exist"):
        build_report([tmp_path / "nope"], tmp_path / "r.html")
    (tmp_path / "empty" / "figures").mkdir(parents=True)
    with pytest.raises(MimlensError, match=r"empty holds no mimlens run \(expected one of cka_across.json"):
        build_report([tmp_path / "empty"], tmp_path / "r.html")
    write_run(tmp_path / "broken", {"attention.json": "{not json"})
    with pytest.raises(MimlensError, match="attention.json is not valid JSON"):
        build_report([tmp_path / "broken"], tmp_path / "r.html")


def test_text_from_files_is_escaped(tmp_path):
    run = write_run(tmp_path / "run", {"attention.json": attention_doc(model="<script>alert(1)</script>")})
    text = build_report([run], tmp_path / "r.html").read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_findings_table_rows_and_verdicts():
    html = findings_table([{"id": "F1", "statement": "locality", "verdict": "reproduced",
                            "numbers": {"a": 0.123456, "n": 3}, "rule": "a < 1 & b"},
                           ("F2", "AvgDist", "not reproduced", "none")])
    assert 'class="verdict reproduced"' in html and 'class="verdict not-reproduced"' in html
    assert '<tr><th>a</th><td class="num">0.1235</td></tr><tr><th>n</th><td class="num">3</td></tr>' in html
    assert html.count('class="rule"') == 1 and "<summary>rule</summary>a &lt; 1 &amp; b" in html
    assert "<td>none" in html  # numbers given as text
    with pytest.raises(MimlensError, match="verdict 'maybe' is not one of"):
        findings_table([("F1", "x", "maybe", "")])
    with pytest.raises(MimlensError, match="lacks numbers"):
        findings_table([{"id": "F1", "statement": "x", "verdict": "reproduced"}])


def test_render_page_gives_unique_anchors_and_a_two_level_contents():
    page = Page(render_page("T", [Section("Same", "<p>1</p>", [Section("Files", "")]),
                                  Section("Same", "", [Section("Files", "")])]))
    assert len(page.ids) == len(set(page.ids)) == 4
    assert [link[1:] for link in page.links] == page.ids


def test_blocks_format_and_validate():
    assert [fmt(v) for v in (3, 0.123456, 1234.5, 1e-5, True, None, float("nan"))] == \
        ["3", "0.1235", "1234", "1.00e-05", "true", "", "nan"]
    assert png_data_uri(png_bytes()).startswith("data:image/png;base64,iVBORw0KGgo")
    with pytest.raises(MimlensError, match="not a PNG image"):
        png_data_uri(b"GIF89a....")
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        table(["a", "b", "c"], [[1, 2]])
    flat = json_table({"top1": 0.5, "eval": {"rmse": 0.3}, "curve": [1, 2], "long": list(range(20))})
    assert "eval.rmse" in flat and "1, 2" in flat and "long" not in flat
    assert json_table("text") == ""


def test_training_log_curves(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1, "loss": 2.0, "lr": 0.1, "top1": 0.2}\n\n{"epoch": 0, "epoch_end": true, "loss": 9}\n'
                    '{"step": 2, "loss": 1.0, "lr": 0.1, "flag": true}\n')
    assert curve_series(read_log(path)) == {"loss": ([1, 2], [2.0, 1.0]), "top1": ([1], [0.2])}
    path.write_text('{"step": 1}\n[1, 2\n')
    with pytest.raises(MimlensError, match="log.jsonl: line 2 is not JSON"):
        read_log(path)


def test_layer_rows_and_text_table():
    rows = attention_layer_rows(attention_doc(depth=2))
    assert rows[1] == ["blocks.1", 12.0, 16.06, 2.25, pytest.approx(math.log(16)), 0.6]
    text = text_table(LAYER_COLUMNS, rows + [["blocks.2", None, None, None, None, None]])
    lines = text.splitlines()
    assert lines[0] == "layer     distance px  uniform px  entropy  uniform entropy  head KL"
    assert lines[2].split() == ["blocks.0", "11", "16.06", "2.25", "2.773", "0.6"]
    assert lines[-1].split() == ["blocks.2", "-", "-", "-", "-", "-"]
    assert len({len(line) for line in lines[:2]}) == 1


def test_fine_tuning_metrics_name_their_variant(runs, tmp_path):
    text = build_report([runs["demo"] / "finetune_depth"], tmp_path / "r.html").read_text()
    assert "primary metric</dt><dd>rmse</dd><dt>value</dt><dd>0.31</dd><dt>higher is better</dt><dd>false" in text
    assert "<caption>metric variant</caption>" in text and "<td>per image</td>" in text
    assert "<caption>metric: rmse</caption>" in text and '<td class="num">0.2900</td>' in text


def test_a_report_inside_the_runs_it_shows_does_not_find_its_own_copies(runs):
    out = runs["demo"] / "report" / "report.html"
    first = Page(build_report([runs["demo"], runs["analysis"]], out).read_text()).headings
    second = Page(build_report([runs["demo"], runs["analysis"]], out).read_text()).headings
    assert first == second and sum(t.startswith("Analysis:") for _, t in second) == 1
    assert (out.parent / "analysis" / "attention.json").is_file()


def test_a_demo_page_names_the_rules_version_of_its_findings(tmp_path):
    demo = tmp_path / "demo"
    write_run(demo, {"findings.json": {"preset": "default", "rules_version": 2, "findings": [
        {"id": "F4", "statement": "dropping helps", "verdict": "within errors",
         "numbers": {"d": 0.001, "reason": "within errors: depth (detectable difference 0.002)"}}]}})
    text = build_report([demo], tmp_path / "out" / "report.html").read_text()
    assert "Findings rules version 2 (docs/findings.md)" in text and 'class="verdict within-errors"' in text
    assert "detectable difference 0.002" in text


def test_the_cka_section_shows_the_interval_and_the_null_of_a_calibrated_cka_json(tmp_path):
    cka = {"estimator": "minibatch linear CKA", "unit": "image", "num_images": 64, "bootstrap": 4, "permutations": 9,
           "layers_a": ["blocks.0", "blocks.1", "blocks.2"], "layers_b": ["blocks.0", "blocks.1", "blocks.2"],
           "matrix": [[1.0, 0.8, 0.6], [0.8, 1.0, 0.7], [0.6, 0.7, 1.0]],
           "interval": {"low": [[1.0, 0.75, 0.55], [0.75, 1.0, 0.65], [0.55, 0.65, 1.0]],
                        "high": [[1.0, 0.85, 0.66], [0.85, 1.0, 0.74], [0.66, 0.74, 1.0]]},
           "null_mean": [[0.1, 0.02, 0.01], [0.02, 0.1, 0.03], [0.01, 0.03, 0.1]],
           "p_value": [[0.1, 0.1, 0.1], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1]],
           "off_diagonal_replicates": [0.66, 0.70, 0.68, 0.72]}
    run = write_run(tmp_path / "analysis", {"attention.json": attention_doc(), "cka.json": cka,
                                            "config.yaml": "model: {spec: vit-micro-32}\n"})
    text = build_report([run], tmp_path / "report.html").read_text()
    low, high = np.percentile(cka["off_diagonal_replicates"], [2.5, 97.5])
    assert f"[{low:.3f}, {high:.3f}]" in text and "its mean under the null (permuted images)" in text
    assert "[0.550, 0.660]" in text and "[0.650, 0.740]" in text and "4 replicates" in text
    assert "9 permutations" in text and "p-value" in text
