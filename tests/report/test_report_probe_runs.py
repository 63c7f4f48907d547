"""``mimlens report`` of a probe run and of an ``--every-checkpoint`` analysis: their figures and numbers."""

import json
import re

import pytest
import yaml
from cli_capture import run_cli

from mimlens.models import build_model, model_section
from mimlens.models.snapshots import save_snapshot


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A probe run of vit-micro-32 (two tasks) and the every-checkpoint analysis of a run with two snapshots."""
    root = tmp_path_factory.mktemp("probe_runs")
    status, printed = run_cli("probe", "vit-micro-32", "--task", "cls,depth", "--num-train", "10", "--num-eval", "8",
                              "--batch-size", "8", "--out", root / "probe", "--no-progress")
    assert status == 0, printed
    training = root / "training"
    training.mkdir()
    (training / "config.yaml").write_text(yaml.safe_dump({"model": model_section("vit-micro-32")}))
    for step in (5, 20):
        save_snapshot(build_model("vit-micro-32", seed=step), training, step)
    status, printed = run_cli("analyze", training, "--every-checkpoint", "--num-images", "4", "--batch-size", "2",
                              "--out", root / "over", "--no-progress")
    assert status == 0, printed
    return root


def test_a_probe_run_is_reported_with_its_figure_and_every_row(runs):
    status, printed = run_cli("report", runs / "probe")
    assert status == 0 and printed.strip() == f"report: {runs / 'probe' / 'report.html'}"
    page = (runs / "probe" / "report.html").read_text()
    doc = json.loads((runs / "probe" / "probe.json").read_text())
    assert "<h2" in page and "Probe: vit-micro-32" in page and "Frozen probes by block" in page
    assert page.count("data:image/png;base64,") == 1 and 'href="figures/probe_by_layer.png"' in page
    assert "<th>top1</th><th>SE</th><th>λ</th>" in page.replace(' class="num"', "")  # no lambda_factor column
    for name, task in doc["tasks"].items():
        assert f"{name}: {task['primary']} by block" in page
        for row in task["rows"]:
            assert f'<td class="num">{row["block"]}</td><td>{row["name"]}</td>' in page
        for base in task["baselines"]:
            assert f"<td>baseline: {base}</td>" in page
    top1 = [r["top1"] for r in doc["tasks"]["cls"]["rows"]]
    cls = page.split("cls: top1 by block</h3>", 1)[1].split("</table>", 1)[0]
    shown = re.findall(r"<td>blocks\.\d</td><td class=\"num\">([0-9.]+)</td>", cls)
    assert [float(v) for v in shown] == pytest.approx(top1, abs=5e-4)


def test_an_every_checkpoint_analysis_is_reported_with_its_figure_and_steps(runs):
    status, _ = run_cli("report", runs / "over", runs / "probe", "--out", runs / "both")
    assert status == 0
    page = (runs / "both" / "report.html").read_text()
    summary = json.loads((runs / "over" / "attention_over_training.json").read_text())
    assert "Over training: training</h2>" in page and "Attention over training" in page
    assert "Probe: vit-micro-32" in page
    assert page.count("data:image/png;base64,") == 2
    assert (runs / "both" / "over" / "figures" / "attention_over_training.png").is_file()
    assert "<th>step 5</th><th>step 20</th>" in page.replace(' class="num"', "")
    distance = page.split("Mean attention distance (px)</h3>", 1)[1].split("</table>", 1)[0]
    cells = [float(v) for v in re.findall(r'<td class="num">([0-9.]+)</td>', distance)]
    expected = [summary["distance_px"][s][layer] for layer in range(3) for s in range(2)]
    assert cells == pytest.approx(expected, abs=5e-3)
