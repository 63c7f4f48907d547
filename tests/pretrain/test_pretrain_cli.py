"""``mimlens pretrain`` end to end through ``mimlens.cli.main``: run directory, exported backbone, resume."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from mimlens.cli import main
from mimlens.models import load_model

RECIPES = Path(__file__).parents[2] / "configs"

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


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*_vit-tiny_synthetic64.yaml")))
def test_every_shipped_tiny_recipe_can_be_shortened(tmp_path, capsys, recipe):
    args = ["pretrain", recipe.split("_")[0], "--config", str(RECIPES / recipe), "--data", "synthetic:16",
            "--batch-size", "8", "--no-progress", "--out", str(tmp_path / "run")]
    assert main([*args, "--steps", "6"]) == 2  # the recipe's 200-step warm-up does not fit in 6 steps
    err = capsys.readouterr().err
    assert "optim.warmup_steps (--warmup-steps) gives a warm-up of 200 steps" in err and err.count("\n") == 1
    assert main([*args, "--steps", "6", "--warmup-steps", "2"]) == 0
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["resolved"]["warmup_steps"] == 2 and cfg["resolved"]["total_steps"] == 6


@pytest.mark.parametrize("objective", ["simmim", "supervised", "moco"])
def test_an_image_size_the_patch_does_not_divide_is_refused(tmp_path, capsys, objective):
    assert main(["pretrain", objective, "--arch", "vit-micro-32", "--img-size", "30", "--data", "synthetic:16",
                 "--steps", "2", "--out", str(tmp_path / "run")]) == 2
    assert "image size 30 px is not a multiple of the 8 px patch" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_flat_folder_is_refused_for_supervised_before_anything_is_written(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "flat").mkdir()
    for i in range(4):
        Image.new("RGB", (40, 40), (i * 60, 0, 0)).save(tmp_path / "flat" / f"{i}.png")
    for extra in ([], ["--config", str(tmp_path / "classes.yaml")]):
        (tmp_path / "classes.yaml").write_text("supervised: {num_classes: 3}\n")
        assert main(["pretrain", "supervised", "--arch", "vit-micro-32", "--data", str(tmp_path / "flat"),
                     "--steps", "2", "--batch-size", "2", "--out", str(tmp_path / "run"), *extra]) == 2
        assert "flat folder of images without class labels" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()
