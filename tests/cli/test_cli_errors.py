"""Bad input gives one line on stderr and exit status 2, never a traceback."""

import subprocess
import sys
from pathlib import Path

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
    assert "holds a pre-training run" in one_line_error(status, err, "analyze")
    assert (training / "config.yaml").read_text().startswith("objective: simmim")


def test_report_of_nothing(cli, tmp_path):
    status, _, err = cli("report", tmp_path / "missing")
    assert "does not exist" in one_line_error(status, err, "report")
    status, _, err = cli("report", tmp_path)
    assert "holds no mimlens run" in one_line_error(status, err, "report")


@pytest.mark.parametrize("argv, expected", [
    (["analyze", "vit-micro-32", "--data", "synthetic:abc"], "data spec 'synthetic:abc'"),
    (["compare", "vit-micro-32", "vit-micro-32", "--data", "photos:0"], "data spec 'photos:0'"),
    (["pretrain", "simmim", "--data", "no/such/folder"], "data 'no/such/folder'"),
    (["finetune", "depth", "--data", "photos"], "data spec 'photos'"),
    (["probe", "vit-micro-32", "--data", "synthetic:abc"], "data spec 'synthetic:abc'"),
    (["analyze", "no-such-model"], "unknown model 'no-such-model'"),
    (["analyze", "missing/weights.pt"], "model 'missing/weights.pt': no such file or directory"),
    (["probe", "no-such-model"], "unknown model 'no-such-model'"),
    (["probe", "missing/weights.pt"], "no such file or directory"),
    (["compare", "vit-micro-32", "missing/weights.pt"], "no such file or directory"),
    (["finetune", "cls", "--init", "no-such-model"], "unknown model 'no-such-model'"),
    (["finetune", "cls", "--init", "missing/weights.pt"], "no such file or directory"),
    (["finetune", "cls", "--resume", "missing/last.pt"], "--resume missing/last.pt: no such checkpoint file"),
    (["pretrain", "simmim", "--arch", "no-such-model"], "unknown model 'no-such-model'"),
    (["analyze", "vit_small_patch16_224"], "did you mean timm:vit_small_patch16_224?"),
    (["analyze", "timm:no_such_net"], "unknown timm model 'no_such_net' in 'timm:no_such_net'"),
    (["probe", "timm:vit_smal_patch16_224"], "close timm names: vit_small_patch16_224"),
    (["masks", "--out", "pyproject.toml/out"], "pyproject.toml is a file, not a folder"),
    (["demo", "--out", "pyproject.toml"], "--out pyproject.toml is a file"),
])
def test_a_bad_argument_is_refused_before_torch_is_imported(argv, expected):
    """Data specs, MODEL spellings, paths and --out are checked first: a typo costs no start-up time."""
    code = ("import sys; from mimlens.cli import main; rc = main(sys.argv[1:]); "
            "sys.exit(10 + rc if 'torch' in sys.modules else rc)")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr  # 12 would mean torch was imported first
    assert result.stderr.count("\n") == 1 and expected in result.stderr


def test_a_bare_generated_name_that_is_also_a_folder_here_is_ambiguous(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    status, _, err = cli("analyze", "vit-micro-32", "--data", "photos", "--out", tmp_path / "run")
    assert "'photos' is ambiguous" in one_line_error(status, err, "analyze") and "write ./photos" in err
    status, _, err = cli("finetune", "cls", "--data", "photos", "--out", tmp_path / "run")
    assert "write ./photos for the folder" in one_line_error(status, err, "finetune") and "photos:N" not in err
    assert not (tmp_path / "run").exists()


KINDS = {  # a config.yaml of each kind of run directory, and the command that writes it
    "analyze": "analysis: {cka: false}\nmodel: {spec: vit-micro-32}\n",
    "compare": "items: [a, b]\nanalysis: {batch_size: 4}\n",
    "probe": "probe: {tasks: [cls]}\nmodel: {spec: vit-micro-32}\n",
    "masks": "masks: {img_size: 32}\n",
    "pretrain": "objective: simmim\nmodel: {name: vit-micro-32}\n",
    "finetune": "task: cls\nmodel: {name: vit-micro-32}\n",
    "demo": "demo: {preset: quick}\n",
}
WRITERS = {
    "analyze": ["analyze", "vit-micro-32"],
    "compare": ["compare", "vit-micro-32", "vit-micro-32"],
    "probe": ["probe", "vit-micro-32"],
    "masks": ["masks", "--img-size", "32"],
    "pretrain": ["pretrain", "simmim", "--arch", "vit-micro-32", "--steps", "1"],
    "finetune": ["finetune", "cls", "--init", "vit-micro-32", "--steps", "1"],
    "demo": ["demo", "--preset", "quick"],
}


@pytest.mark.parametrize("command", list(WRITERS))
def test_every_command_refuses_a_folder_of_another_kind_of_run(cli, tmp_path, command):
    """Each command against a folder of every other kind: one line naming it, nothing written."""
    for kind, config in KINDS.items():
        if kind == command:
            continue
        folder = tmp_path / kind
        folder.mkdir()
        (folder / "config.yaml").write_text(config)
        status, _, err = cli(*WRITERS[command], "--out", folder)
        line = one_line_error(status, err, command)
        assert f"{folder} holds " in line and f"mimlens {command} would overwrite it" in line, line
        assert (folder / "config.yaml").read_text() == config and [p.name for p in folder.iterdir()] == ["config.yaml"]


def test_an_unwritable_out_is_one_line(cli, tmp_path, monkeypatch):
    """Tests run as root, where a read-only mode does not stop writes: a path under a file, and a folder that
    ``os.access`` calls unwritable (what a read-only file system answers), stand in for it."""
    (tmp_path / "afile").write_text("x")
    status, _, err = cli("pretrain", "simmim", "--out", tmp_path / "afile" / "run")
    assert f"cannot write {tmp_path / 'afile' / 'run'}: {tmp_path / 'afile'} is a file" in one_line_error(
        status, err, "pretrain")
    import os

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == readonly else real_access(path, mode))
    for argv in (["analyze", "vit-micro-32"], ["finetune", "cls"], ["masks"]):
        status, _, err = cli(*argv, "--out", readonly / "run")
        assert f"{readonly} is not writable (read-only file system or no permission)" in one_line_error(
            status, err, argv[0])
    assert list(readonly.iterdir()) == []


def test_analyze_into_an_earlier_analysis_keeps_nothing_stale(cli, tmp_path):
    out = tmp_path / "analysis"
    args = ["--num-images", "4", "--batch-size", "4", "--out", out, "--no-progress"]
    assert cli("analyze", "vit-micro-32", "--cka", *args)[0] == 0
    assert (out / "cka.json").is_file() and (out / "figures" / "cka_within.png").is_file()
    assert "CKA between layers" in (out / "report.html").read_text()
    assert cli("analyze", "vit-micro-32", "--seed", "1", *args)[0] == 0
    assert not (out / "cka.json").exists() and not (out / "figures" / "cka_within.png").exists()
    assert "CKA between layers" not in (out / "report.html").read_text()


def test_training_arguments_that_used_to_end_in_a_traceback(cli, tmp_path, demo_dir, checkpoint):
    status, _, err = cli("pretrain", "simmim", "--arch", "vit-micro-32", "--steps", "0", "--out", tmp_path / "p")
    assert "train.steps must be positive, got 0" in one_line_error(status, err, "pretrain")
    status, _, err = cli("finetune", "linear", "--init", "vit-micro-32", "--probe-block", "9", "--data",
                         "synthetic:16", "--num-eval", "8", "--batch-size", "8", "--steps", "1",
                         "--out", tmp_path / "l")
    assert "linear.block (--probe-block) 9 does not exist: VisionTransformer has 3 blocks, indices 0 to 2" in (
        one_line_error(status, err, "finetune"))
    pretraining = demo_dir / "pretrain_simmim" / "checkpoints" / "last.pt"
    status, _, err = cli("finetune", "cls", "--init", "vit-micro-32", "--data", "synthetic:16", "--num-eval", "8",
                         "--batch-size", "8", "--steps", "2", "--resume", pretraining, "--out", tmp_path / "f")
    assert "it is a pre-training checkpoint and this is a fine-tuning run; give it as --init" in one_line_error(
        status, err, "finetune")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(pretraining.read_bytes()[:3000])
    status, _, err = cli("analyze", truncated, "--out", tmp_path / "a")
    assert "is not a readable torch checkpoint: a damaged or truncated torch.save archive (3000 bytes)" in (
        one_line_error(status, err, "analyze"))
    assert not any((tmp_path / name).exists() for name in ("p", "l", "f", "a"))


def test_a_timm_name_is_refused_before_timm_only_when_timm_cannot_know_it():
    """The text check refuses only names absent from timm's model files; timm's registry judges the rest."""
    import timm

    from mimlens.errors import MimlensError
    from mimlens.model_names import check_model_spelling

    for name in ("vit_small_patch16_224", "swinv2_tiny_window8_256", "vit_small_patch16_224.augreg_in21k"):
        check_model_spelling(f"timm:{name}")  # a model of the registry passes
        assert timm.is_model(name.split(".")[0])
    with pytest.raises(MimlensError, match="unknown timm model 'vit_small_patch16_2244'"):
        check_model_spelling("timm:vit_small_patch16_2244")
