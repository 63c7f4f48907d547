"""``mimlens analyze RUN --every-checkpoint``: every backbone snapshot analysed on the same images, against step."""

import contextlib
import io
import json

import pytest
import torch
import yaml

from mimlens.analysis.attention import attention_stats
from mimlens.cli import main
from mimlens.data import build_dataset
from mimlens.models import build_model, model_section
from mimlens.models.snapshots import save_snapshot


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory with the config of a vit-micro-32 and two snapshots of different weights, no final backbone."""
    run = tmp_path_factory.mktemp("over_training") / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"model": model_section("vit-micro-32")}))
    encoders = {step: build_model("vit-micro-32", seed=step) for step in (20, 5)}
    for step, encoder in encoders.items():
        save_snapshot(encoder, run, step)
    return run, encoders


def test_every_snapshot_is_analysed_like_one_model(run, tmp_path):
    run, encoders = run
    out = tmp_path / "over"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["analyze", str(run), "--every-checkpoint", "--num-images", "4", "--batch-size", "2",
                     "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "attention_over_training.json").read_text())
    assert summary["steps"] == [5, 20] and summary["layers"] == ["blocks.0", "blocks.1", "blocks.2"]
    assert summary["num_images"] == 4 and (out / "figures" / "attention_over_training.png").is_file()
    dataset = build_dataset("synthetic", img_size=32)
    images = torch.stack([dataset[i]["image"] for i in range(4)])
    for row, step in enumerate(summary["steps"]):
        stats = attention_stats(encoders[step].eval(), images)
        assert summary["distance_px"][row] == pytest.approx([d.mean().item() for d in stats.distance_px], rel=1e-5)
        assert summary["entropy"][row] == pytest.approx([h.mean().item() for h in stats.entropy], rel=1e-5)
        assert summary["head_kl_mean"][row] == pytest.approx(stats.head_kl_mean, rel=1e-4)
        assert json.loads((out / "attention" / f"step_{step}.json").read_text())["step"] == step
    assert summary["distance_px"][0] != summary["distance_px"][1]
    assert "mean attention distance (px) per layer" in printed.getvalue()


def test_a_run_without_snapshots_says_how_to_keep_them(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": model_section("vit-micro-32")}))
    assert main(["analyze", str(tmp_path), "--every-checkpoint", "--out", str(tmp_path / "out")]) == 2
    assert "train.snapshot_every" in capsys.readouterr().err
