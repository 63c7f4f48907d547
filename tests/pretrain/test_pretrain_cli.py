"""``mimlens pretrain`` end to end through ``mimlens.cli.main``: run directory, exported backbone, resume."""

import json

import pytest
import torch
import yaml

from mimlens.cli import main
from mimlens.models import load_model

TINY_MOCO = {"moco": {"dim": 16, "mlp_dim": 32}}


@pytest.mark.parametrize("objective", ["simmim", "supervised", "moco"])
def test_pretrain_writes_a_run_that_load_model_reads(tmp_path, capsys, objective):
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(TINY_MOCO if objective == "moco" else {"train": {"log_every": 1}}))
    args = ["pretrain", objective, "--arch", "vit-micro-32", "--data", "synthetic:16", "--steps", "2",
            "--batch-size", "8", "--config", str(recipe), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert f"pretrain {objective} finished at step 2/2" in capsys.readouterr().out

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == {"name": "vit-micro-32", "kwargs": {}}
    assert config["optim"]["lr"] == pytest.approx(config["optim"]["base_lr"] * 8 / 256)
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert lines[-1]["epoch_end"] and lines[-2]["step"] == 2 and "images_per_s" in lines[-2]

    model, info = load_model(out)
    assert info["missing_keys"] == []
    trained = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, trained[f"encoder.{name}"]), name
    assert not any(k.startswith("head") for k in model.state_dict())
    assert (out / "figures" / "simmim_reconstruction.png").exists() == (objective == "simmim")

    assert main(args) == 0  # a rerun resumes from the finished checkpoint and stops at once
    assert "resuming at step 2" in capsys.readouterr().out


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    def pretrain(*extra):
        return main(["pretrain", "simmim", "--arch", "vit-micro-32", "--data", "synthetic:16", "--steps", "2",
                     "--no-progress", "--out", str(tmp_path / "run"), *extra])

    assert pretrain("--batch-size", "8", "--mask-patch", "12") == 2
    assert "mask_patch_size 12" in capsys.readouterr().err
    assert pretrain("--batch-size", "32") == 2
    assert "fewer than one global batch" in capsys.readouterr().err
