"""Bad input gives one line on stderr and exit status 2, never a traceback."""

import subprocess
import sys

import pytest


def one_line_error(status, err, command):
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mimlens {command}: error: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("model, expected", [
    ("no-such-model", "unknown model 'no-such-model'"),
    ("timm:no_such_net", "unknown timm model 'no_such_net'"),
    ("missing/weights.pt", "no such file or directory"),
])
def test_analyze_unknown_model(cli, tmp_path, model, expected):
    status, _, err = cli("analyze", model, "--out", tmp_path / "run")
    assert expected in one_line_error(status, err, "analyze")
    assert not (tmp_path / "run").exists()


def test_analyze_bad_data_config_and_output(cli, tmp_path):
    status, _, err = cli("analyze", "vit-micro-32", "--data", tmp_path / "nowhere", "--out", tmp_path / "a")
    assert "nor an existing directory" in one_line_error(status, err, "analyze")
    config = tmp_path / "c.yaml"
    config.write_text("analysis: {batch_sise: 4}\n")
    status, _, err = cli("analyze", "vit-micro-32", "--config", config, "--out", tmp_path / "b")
    assert "unknown key 'batch_sise'" in one_line_error(status, err, "analyze")
    config.write_text("data: {num_images: 0}\n")
    status, _, err = cli("analyze", "vit-micro-32", "--config", config, "--out", tmp_path / "b")
    assert "data.num_images=0: expected a positive integer" in one_line_error(status, err, "analyze")
    config.write_text("data: {synthetic: {num_objects: [1, 2]}}\n")
    status, _, err = cli("analyze", "vit-micro-32", "--config", config, "--data", "photos", "--out", tmp_path / "b")
    assert "data.synthetic sets the difficulty of generated scenes, but data.source is 'photos'" in one_line_error(
        status, err, "analyze")
    training = tmp_path / "training"
    training.mkdir()
    (training / "config.yaml").write_text("objective: simmim\nmodel: {name: vit-micro-32}\n")
    status, _, err = cli("analyze", "vit-micro-32", "--out", training)
    assert "holds another kind of run" in one_line_error(status, err, "analyze")
    assert (training / "config.yaml").read_text().startswith("objective: simmim")


def test_report_of_nothing(cli, tmp_path):
    status, _, err = cli("report", tmp_path / "missing")
    assert "does not exist" in one_line_error(status, err, "report")
    status, _, err = cli("report", tmp_path)
    assert "holds no mimlens run" in one_line_error(status, err, "report")


@pytest.mark.parametrize("argv", [
    ["analyze", "vit-micro-32", "--data", "synthetic:abc"],
    ["compare", "vit-micro-32", "vit-micro-32", "--data", "photos:0"],
    ["pretrain", "simmim", "--data", "no/such/folder"],
    ["finetune", "depth", "--data", "photos"],
])
def test_a_bad_data_spec_is_refused_before_torch_is_imported(argv):
    code = ("import sys; from mimlens.cli import main; rc = main(sys.argv[1:]); "
            "sys.exit(10 + rc if 'torch' in sys.modules else rc)")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr  # 12 would mean torch was imported first
    assert result.stderr.count("\n") == 1 and "data" in result.stderr
