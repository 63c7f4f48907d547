"""``mimlens report`` on real runs: one file, every figure an embedded PNG, clean in a real browser."""

import base64
import io
import re

from PIL import Image


def embedded_images(text):
    return re.findall(r'<img src="([^"]*)"', text)


def test_report_of_analysis_comparison_masks_and_pretraining_runs(analysis_run, compare_run, demo_dir, workdir, cli,
                                                                  browser):
    out = workdir / "report"
    status, printed, _ = cli("report", analysis_run.path, compare_run.path, demo_dir, "--out", out, "--title", "Runs")
    assert status == 0 and printed.strip() == f"report: {out / 'report.html'}"
    text = (out / "report.html").read_text()
    headings = re.findall(r"<h2 id=\"[^\"]*\">([^<]*)</h2>", text)
    assert headings == ["Analysis: " + str(analysis_run.path.parent / "micro.safetensors"),
                        "Comparison: analysis vs swin-tiny-64", "Masking: AvgDist (demo/masks)",
                        "Pre-training: demo/pretrain_simmim (simmim)"]
    sources = embedded_images(text)
    # analysis: distance, entropy, head KL, CKA within; comparison: the same three overlaid, CKA across;
    # masks: AvgDist and example masks; pre-training: curves drawn from log.jsonl and the reconstruction
    assert len(sources) == 8 + 2 + 2
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    assert not re.search(r'(src|href)="(https?:)?//', text) and "<link" not in text and "<script" not in text
    for name in ("analysis/attention.json", "analysis/attention.csv", "analysis/figures/head_kl.png",
                 "compare/cka_across.json", "compare/attention/swin-tiny-64.json", "compare/figures/cka_across.png"):
        assert (out / name).is_file() and f'href="{name}"' in text
    found = browser(out / "report.html")
    assert found["images"] == 12 and found["broken"] == [] and found["errors"] == []
    assert not [line for line in found["console"] if "Uncaught" in line or "rror" in line]


def test_run_reports_open_cleanly_in_a_browser(analysis_run, compare_run, browser):
    for run in (analysis_run, compare_run):
        found = browser(run.path / "report.html")
        assert found["images"] >= 4 and found["broken"] == [] and found["errors"] == []


def test_report_default_output_is_the_single_run_directory(analysis_run, cli):
    (analysis_run.path / "report.html").unlink()
    status, printed, _ = cli("report", analysis_run.path)
    assert status == 0 and printed.strip() == f"report: {analysis_run.path / 'report.html'}"
    assert "Analysis: " in (analysis_run.path / "report.html").read_text()
