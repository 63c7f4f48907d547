"""Checkpoints: RNG round trip, and a resumed run equals an uninterrupted one exactly on CPU."""

import json
import random

import numpy as np
import pytest
import torch

from mimlens.engine import load_checkpoint, rng_state, set_rng_state, train
from mimlens.engine.checkpoint import save_checkpoint
from mimlens.errors import MimlensError
from mimlens.pretrain import SimMIM, Supervised


def test_rng_state_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached Gaussian in NumPy's state
    save_checkpoint({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.normal(size=3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.normal(size=3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_load_checkpoint_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(MimlensError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(MimlensError, match="lacks"):
        load_checkpoint(tmp_path / "foreign.pt")


def _simmim(make_vit):
    torch.manual_seed(0)
    return SimMIM(make_vit(drop_path_rate=0.2, proj_drop_rate=0.1), mask_ratio=0.6, mask_patch=8)


def _supervised(make_vit):
    torch.manual_seed(0)
    return Supervised(make_vit(num_classes=4, drop_rate=0.1), mixup=0.8, cutmix=1.0)


def _losses(run_dir):
    return [r["loss"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "lr" in r]


@pytest.mark.parametrize("build", [_simmim, _supervised], ids=["simmim-dropout", "supervised-mixup"])
def test_stop_and_resume_mid_epoch_equals_one_run(tmp_path, cfg, toy_images, make_vit, build):
    """20 images, batch 8: 2 steps per epoch; stopping at step 3 stops inside epoch 1."""
    data = toy_images(20)
    straight = build(make_vit)
    train(straight, data, straight.transform(32, (0.5, 1.0)), cfg, tmp_path / "straight")

    first = build(make_vit)
    cfg["run"]["stop_at"] = 3
    summary = train(first, data, first.transform(32, (0.5, 1.0)), cfg, tmp_path / "resumed")
    assert summary["step"] == 3 and not summary["finished"]
    assert not (tmp_path / "resumed" / "backbone.safetensors").exists()
    with open(tmp_path / "resumed" / "log.jsonl", "a") as log:  # logged after the checkpoint, then a crash
        log.write(json.dumps({"step": 4, "epoch": 1, "lr": 0.0, "loss": -1.0}) + "\n")

    torch.manual_seed(123)  # a fresh process: global RNGs elsewhere, restored from the checkpoint
    np.random.seed(123)
    second = build(make_vit)
    cfg["run"]["stop_at"] = None
    cfg["run"]["num_workers"] = 1  # run settings may change on resume
    summary = train(second, data, second.transform(32, (0.5, 1.0)), cfg, tmp_path / "resumed")
    assert summary["finished"] and summary["step"] == 6

    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")
    for (name, a), (_, b) in zip(straight.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_resume_refuses_a_changed_config(tmp_path, cfg, toy_images, make_vit):
    model = _simmim(make_vit)
    cfg["train"]["steps"] = 3
    train(model, toy_images(16), model.transform(32), cfg, tmp_path)
    cfg["optim"]["base_lr"] = 1.0
    with pytest.raises(MimlensError, match="optim.base_lr"):
        train(_simmim(make_vit), toy_images(16), model.transform(32), cfg, tmp_path)


def test_gradient_accumulation_equals_the_full_batch(tmp_path, cfg, toy_images, make_vit):
    data = toy_images(16)
    runs = []
    for accum in (1, 2):
        torch.manual_seed(0)
        model = SimMIM(make_vit(), mask_patch=8)  # no dropout: its draws depend on the micro-batch shapes
        cfg["optim"]["accum_steps"] = accum
        cfg["train"]["steps"] = 3
        train(model, data, model.transform(32), cfg, tmp_path / str(accum))
        runs.append((model, _losses(tmp_path / str(accum))))
    (a, losses_a), (b, losses_b) = runs
    assert losses_a == pytest.approx(losses_b, rel=1e-5)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6, msg=name)
