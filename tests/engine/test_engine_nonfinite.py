"""A non-finite loss stops the run, names the step and keeps the last good checkpoint untouched."""

import pytest
import torch
from engine_toys import Regression, identity

from mimlens.engine import NonFiniteLoss, load_checkpoint, train


def test_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, cfg, toy_images):
    cfg["train"].update(steps=10, log_every=4, checkpoint_every=3)
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at step 5 \(epoch 2\).*last.pt, step 3"):
        train(Regression(bad_step=4), toy_images(16), identity, cfg, tmp_path)  # update 4 is step 5
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "backbone.safetensors").exists()


def test_nan_before_any_checkpoint_says_so(tmp_path, cfg, toy_images):
    cfg["train"].update(steps=4, log_every=1)
    with pytest.raises(NonFiniteLoss, match="at step 1 .*none was written yet"):
        train(Regression(bad_step=0), toy_images(16), identity, cfg, tmp_path)
