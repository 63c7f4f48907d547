"""Backbone snapshots of a training run, and which weights an unfinished run gives."""

import torch
import yaml

from mimlens.models import build_model, load_model, model_section
from mimlens.models.snapshots import list_snapshots, save_snapshot, snapshot_path


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_snapshots_are_listed_by_step_and_load_without_arch(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": model_section("vit-micro-32")}))
    encoders = {step: build_model("vit-micro-32", seed=step) for step in (10, 2)}
    for step, encoder in encoders.items():
        assert save_snapshot(encoder, tmp_path, step) == snapshot_path(tmp_path, step)
    assert list_snapshots(tmp_path) == [(2, snapshot_path(tmp_path, 2)), (10, snapshot_path(tmp_path, 10))]
    model, info = load_model(snapshot_path(tmp_path, 2))
    assert same_weights(model, encoders[2]) and info["step"] == 2 and info["format"] == "snapshot"
    latest, info = load_model(tmp_path)  # no backbone.safetensors yet: the highest step (10, not 2 by name order)
    assert same_weights(latest, encoders[10]) and info["step"] == 10 and info["finished"] is False


def test_a_seed_gives_the_same_random_weights_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_model("vit-micro-32", seed=4)
    assert torch.equal(torch.rand(3), expected_next)
    assert same_weights(a, build_model("vit-micro-32", seed=4))
    assert not same_weights(a, build_model("vit-micro-32", seed=5))
