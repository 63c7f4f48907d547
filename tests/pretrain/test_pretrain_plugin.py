"""A new pre-training objective is one registry entry: this file alone defines one (a denoising objective) and
``mimlens pretrain`` trains it, ``analyze`` and ``report`` read its run — nothing else in mimlens names it."""

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from mimlens.cli import main
from mimlens.data.transforms import train_transform
from mimlens.pretrain.augment import mean_std
from mimlens.pretrain.registry import OBJECTIVES, Objective, register


class Denoise(nn.Module):
    """Predict the clean patch-mean colours from a noisy image: MSE on the encoder's patch tokens."""

    def __init__(self, encoder: nn.Module, noise: float):
        super().__init__()
        self.encoder, self.noise = encoder, noise
        self.head = nn.Linear(encoder.num_features, 3)

    def forward(self, batch):
        image = batch["image"]
        tokens = self.encoder.forward_features(image + self.noise * torch.randn_like(image))
        prediction = self.head(tokens[:, self.encoder.num_prefix_tokens:])
        patch = self.encoder.patch_embed.patch_size[0]
        target = F.avg_pool2d(image, patch).flatten(2).transpose(1, 2)
        return {"loss": F.mse_loss(prediction, target)}

    def transform(self, img_size, crop_scale):
        mean, std = mean_std(self.encoder)
        return ImageOnly(train_transform(img_size, scale=tuple(crop_scale), mean=mean, std=std))


class ImageOnly:
    def __init__(self, augment):
        self.augment = augment

    def __call__(self, item):
        return {"image": self.augment(item["image"])}


def _build(encoder, cfg):
    return Denoise(encoder, cfg["denoise"]["noise"])


def _finish(model, dataset, transform, cfg, run_dir):
    (run_dir / "denoise.txt").write_text(f"noise {model.noise}\n")


@pytest.fixture
def denoise():
    register(Objective("denoise", "test-only: patch colours from a noisy image", _build, {"noise": 0.5},
                       (0.5, 1.0), finish=_finish))
    yield
    del OBJECTIVES["denoise"]


def test_a_registered_objective_pretrains_and_its_run_is_analysed_and_reported(denoise, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "denoise", "--arch", "vit-micro-32", "--data", "synthetic:16", "--steps", "2",
                 "--batch-size", "8", "--out", str(out), "--no-progress"]) == 0
    assert "pretrain denoise finished at step 2/2" in capsys.readouterr().out
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["denoise"] == {"noise": 0.5} and config["data"]["crop_scale"] == [0.5, 1.0]
    assert (out / "denoise.txt").read_text() == "noise 0.5\n" and (out / "backbone.safetensors").exists()
    analysis = tmp_path / "analysis"
    assert main(["analyze", str(out), "--data", "synthetic:8", "--batch-size", "4", "--no-progress",
                 "--out", str(analysis)]) == 0
    assert (analysis / "attention.json").exists()
    assert main(["report", str(out)]) == 0
    assert "Pre-training" in (out / "report.html").read_text() and "denoise" in (out / "report.html").read_text()


def test_an_unregistered_objective_is_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "denoise"])
    assert "invalid choice: 'denoise'" in capsys.readouterr().err
