"""How a report reads: a demo page opens with its findings, numbers share a precision, durations and counts read as
words, and no figure axis uses offset notation."""

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mimlens.cli import main
from mimlens.findings import rules as fd
from mimlens.report.blocks import decimals, duration, fmt, numbers_table, plural
from mimlens.report.html import build_report


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (30, 30, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def write(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))


def attention(model: str, distance: float) -> dict:
    layer = {"name": "blocks.0", "distance_px": [distance, distance], "entropy": [2.0, 2.0], "head_kl_mean": 0.1,
             "uniform": {"distance_px": 16.0, "entropy": 2.7}}
    return {"model": model, "weights": f"run {model}", "num_images": 1, "layers": [layer, layer]}


@pytest.fixture
def demo(tmp_path):
    """A demo directory as the demo leaves it: findings, bars, stage records, a comparison and an analysis."""
    out = tmp_path / "quick"
    att = {m: attention(str(out / "pretrain" / m), d) for m, d in (("simmim", 12.0), ("supervised", 15.0))}
    rows = [fd.f1_locality(att["simmim"], att["supervised"], attention("r", 16.0), {}, claims=False)]
    rows[0]["figures"] = ["compare/figures/attention_distance.png", "compare/figures/missing.png"]
    bars = {"simmim": {"masked_l1": 0.5, "nearest_fill_l1": 0.45, "mean_fill_l1": 0.52, "passed": False,
                       "num_images": 1, "rule": "masked L1 < nearest fill"},
            "supervised": {"top1": 0.25, "chance": 0.125, "required": 0.25, "passed": True, "num_images": 1,
                           "rule": "top-1 >= 2 x chance"}}
    write(out / "findings.json", {"preset": "quick", "claims_findings": False, "bars": bars, "findings": rows,
                                  "notice": "a smoke run", "about": {"preset": "quick", "fine-tuning steps": 4}})
    write(out / "config.yaml", "demo: {preset: quick}\n")
    write(out / "figures" / "training_bars.png", png_bytes())
    write(out / "figures" / "transfer.png", png_bytes())
    for i, (name, seconds, budget) in enumerate((("init", 0.47, 0.02), ("compare", 65.4, 0.05),
                                                 ("analyze_simmim", 192.0, 3.0))):
        write(out / "stages" / f"{name}.json", {"key": {}, "finished": True, "seconds": seconds,
                                                 "expected_minutes": budget, "started_at": 100.0 + 1000 * i,
                                                 "finished_at": 100.0 + 1000 * i + seconds})
    write(out / "compare" / "compare.json", {"num_images": 1, "models": [
        {"label": "simmim", "model": str(out / "pretrain" / "simmim"), "attention": "attention/simmim.json"}]})
    write(out / "compare" / "attention" / "simmim.json", att["simmim"])
    write(out / "compare" / "figures" / "attention_distance.png", png_bytes())
    write(out / "analysis" / "simmim" / "attention.json", att["simmim"])
    return out


def test_a_demo_page_opens_with_its_findings_and_folds_its_runs(demo):
    text = build_report([demo], demo / "report.html").read_text()
    assert "<title>mimlens demo (quick preset)</title>" in text
    findings, contents, stages = (text.index(s) for s in ('<table class="findings">', '<nav class="toc">',
                                                           "<th>stage</th>"))
    assert findings < contents < stages
    sections = ("findings", "training-bars", "figures-across-runs", "about-this-demo")
    order = [text.index(f'<h2 id="{h}">') for h in sections]
    assert order == sorted(order)
    # the thumbnail of the figure behind F1 links to the file; a figure that is not there is left out
    assert re.search(r'<a href="compare/figures/attention_distance.png"><img class="thumb" src="data:image/png', text)
    assert "missing.png" not in text
    # the stage records are no run, each run is folded in a group named with its count, paths are relative
    assert "Comparison (1 run)" in text and "Analysis (1 run)" in text and "stages</h" not in text
    assert re.search(r'<details class="fold"><summary><h3 id="[^"]*">Analysis: pretrain/simmim</h3>', text)
    assert str(demo) not in text
    contents_html = text[contents:text.index("</nav>")]
    assert "Analysis: pretrain/simmim" not in contents_html and contents_html.count("<li>") == 6
    # durations in readable units, in the order the stages started
    assert re.search(r"<td>init</td><td class=\"num\">1.2 s</td><td class=\"num\">0.5 s</td>", text)
    assert '<td class="num">3 min</td><td class="num">3 min 12 s</td>' in text
    assert '<td class="num">1 min 5 s</td>' in text and "<dd>35 min 92 s" not in text
    # a bar's numbers share their decimals
    assert '<td class="num">0.2500</td>' in text and '<td class="num">0.1250</td>' in text


def test_mimlens_report_of_a_demo_directory_is_the_demo_page(demo, tmp_path):
    first = build_report([demo], demo / "report.html").read_text()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", str(demo), "--out", str(tmp_path / "again")]) == 0
    again = (tmp_path / "again" / "report.html").read_text()

    def headings(html):
        return re.findall(r"<(h[234]) id=\"[^\"]*\">([^<]*)</h[234]>", html)

    assert headings(again) == headings(first) and ("h2", "About this demo") in headings(again)
    assert "<title>mimlens demo (quick preset)</title>" in again
    assert 'href="quick/compare/figures/attention_distance.png"' in again
    assert (tmp_path / "again" / "quick" / "compare" / "figures" / "attention_distance.png").is_file()


def test_a_findings_table_lays_its_numbers_out_by_quantity_and_model():
    layout = {"columns": ["SimMIM", "supervised"],
              "rows": [["distance (px)", "sim px", "sup px"], ["layers", "layers"], ["gap", "sim gap", None]]}
    html = numbers_table({"sim px": 33.0, "sup px": 33.12, "layers": 12, "sim gap": 0.5, "note": "x"}, layout)
    assert '<th class="num">SimMIM</th><th class="num">supervised</th>' in html
    assert '<th>distance (px)</th><td class="num">33.00</td><td class="num">33.12</td>' in html
    assert '<th>layers</th><td class="span" colspan="2">12</td>' in html
    assert '<th>gap</th><td class="num">0.5000</td><td></td>' in html
    assert "<div>note: x</div>" in html  # a number the layout leaves out still shows
    single = numbers_table({"a": 1.5}, {"columns": ["SimMIM"], "rows": [["a", "a"]]})
    assert "<thead></thead>" in single  # no column heads over a single value


def test_numbers_durations_and_counts_read_as_words():
    assert decimals([33.0, 33.12]) == 2 and decimals([0.0625, 0.125]) == 4 and decimals([1234.5]) == 0
    assert decimals([1e-5, 2e-5]) is None and decimals([3, "x"]) is None
    assert [fmt(33.0, 2), fmt(33.12, 2), fmt(0.5, 4), fmt(7, 2)] == ["33.00", "33.12", "0.5000", "7"]
    assert [duration(s) for s in (0.47, 9.96, 12.4, 59.6, 192, 3600, 3840, None, float("nan"))] == \
        ["0.5 s", "10 s", "12 s", "1 min", "3 min 12 s", "1 h", "1 h 4 min", "", ""]
    assert [plural(1, "image"), plural(2, "image"), plural(0, "run"), plural(1, "run")] == \
        ["1 image", "2 images", "0 runs", "1 run"]


def test_every_demo_finding_row_lays_out_all_its_numbers():
    cka = {"matrix": [[1.0, 0.5], [0.5, 1.0]], "estimator": "linear"}
    rows = [fd.f1_locality(attention("a", 12.0), attention("b", 15.0), attention("r", 16.0), {}, False),
            fd.f5_cka(cka, cka, {}, False)]
    for row in rows:
        laid_out = {k for _, *keys in row["table"]["rows"] for k in keys if k is not None}
        assert laid_out == set(row["numbers"]) - {"reason"}


def test_figures_never_use_offset_notation(tmp_path):
    from matplotlib.figure import Figure

    import mimlens.report  # noqa: F401  (sets the figure style)

    figure = Figure()
    axes = figure.add_subplot()
    axes.plot([0, 1], [1.92874, 1.92876])
    figure.canvas.draw()
    assert axes.yaxis.get_major_formatter().get_offset() == ""
    # the layer-drop figure of a fine-tuning sweep, made in a process that never imported the report
    code = ("import matplotlib; from mimlens.tasks.figures import layer_drop_figure; "
            "sweep = {'task': 'depth', 'metric': 'rmse', 'higher_is_better': False, "
            "'rows': [{'drop_last': 0, 'rmse': 1.92874}, {'drop_last': 1, 'rmse': 1.92876}]}; "
            f"layer_drop_figure(sweep, {str(tmp_path / 'drop.png')!r}); "
            "print(matplotlib.rcParams['axes.formatter.useoffset'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={"MPLBACKEND": "Agg", "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False" and (tmp_path / "drop.png").is_file()


def wide_demo(out: Path) -> Path:
    """A demo directory whose findings table is as wide as the real one's: eight rows, each with a numbers table
    of four models and two or three figures of the demo's aspect ratios (wide fine-tuning panels, square maps)."""
    models = ["SimMIM", "supervised", "random init", "MoCo v3"]
    quantities = ("distance px (mean of layers 0-5)", "uniform px")
    rows = []
    for i, fid in enumerate(["F1", "F2", "F3", "F4", "F5", "F6", "F4-probe", "F6-probe"]):
        figures = [f"figures/f{i}_{k}.png" for k in range(2 + i % 2)]
        for k, name in enumerate(figures):
            buffer = io.BytesIO()
            Image.new("RGB", (1320, 440) if k == 0 else (660, 600), (30, 30, 200)).save(buffer, format="PNG")
            write(out / name, buffer.getvalue())
        rows.append({"id": fid, "statement": "MIM brings locality to every layer, with heads that attend locally",
                     "verdict": "inconclusive", "figures": figures,
                     "numbers": {**{f"{m} {q}": 12.345678 + j for j, m in enumerate(models) for q in quantities},
                                 "reason": "quick preset: models not trained enough (masked L1 0.31 >= 0.29)"},
                     "table": {"columns": models, "rows": [[q, *(f"{m} {q}" for m in models)] for q in quantities]},
                     "rule": "reproduced when SimMIM's mean distance is at least 10 % below uniform in every layer"})
    write(out / "findings.json", {"preset": "quick", "findings": rows, "about": {"preset": "quick"}})
    return out


def test_no_rule_gives_the_report_a_fixed_width_that_clips_figures():
    from mimlens.report.style import CSS

    rules = dict(re.findall(r"^([^{}\n@][^{}]*?)\s*\{([^}]*)\}", CSS, re.M))
    assert "max-width: 100%" in rules["figure img"] and "max-width: 100%" in rules["img.thumb"]
    fixed = {selector: body for selector, body in rules.items()
             if re.search(r"(?<![-\w])width:\s*[\d.]+(px|rem|em)", body)}
    assert fixed == {}, f"fixed widths clip the page on narrow windows: {fixed}"
    assert "min-width: 10rem" in rules[".thumbs"] and "flex-wrap: wrap" in rules[".thumbs"]


def test_the_findings_table_and_its_figures_fit_a_1280_px_window(tmp_path, browser):
    page = build_report([wide_demo(tmp_path / "demo")], tmp_path / "demo" / "report.html")
    assert page.read_text().count('<img class="thumb"') == 20
    found = browser(page)
    assert found["width"] == 1280 and found["images"] == 40  # thumbnails, and again under "Figures across runs"
    assert found["cut"] == [] and found["broken"] == [] and found["errors"] == []
