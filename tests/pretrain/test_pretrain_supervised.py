"""Supervised: label-smoothed cross-entropy by hand, mixup/cutmix through timm, training signal."""

import numpy as np
import pytest
import torch

from mimlens.errors import MimlensError
from mimlens.pretrain import Supervised


def test_loss_is_label_smoothed_cross_entropy(tiny, images):
    model = Supervised(tiny["vit"](num_classes=5), label_smoothing=0.2).eval()
    label = torch.tensor([0, 1, 4, 2])
    out = model({"image": images, "label": label})
    log_p = model.encoder(images).log_softmax(-1)
    expected = -(0.8 * log_p[torch.arange(4), label] + 0.2 * log_p.mean(-1)).mean()
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["acc1"].item() == pytest.approx((log_p.argmax(-1) == label).float().mean().item())


def test_mixup_and_cutmix_give_a_soft_target_loss(tiny, images):
    np.random.seed(0)  # timm's Mixup draws from NumPy's global RNG (saved in checkpoints)
    model = Supervised(tiny["swin"](num_classes=4), mixup=0.8, cutmix=1.0)
    out = model({"image": images, "label": torch.tensor([0, 1, 2, 3])})
    assert set(out) == {"loss"} and torch.isfinite(out["loss"]) and out["loss"] > 0


def test_needs_a_classifier(tiny):
    with pytest.raises(MimlensError, match="num_classes=0"):
        Supervised(tiny["vit"]())


def test_transform_keeps_the_label(tiny):
    out = Supervised(tiny["vit"](num_classes=4)).transform(32)({"image": torch.rand(3, 32, 32), "label": 3})
    assert out["image"].shape == (3, 32, 32) and out["label"].dtype == torch.long and out["label"] == 3


def test_a_few_steps_lower_the_loss(tiny, images, fit):
    torch.manual_seed(0)
    model = Supervised(tiny["vit"](num_classes=4), label_smoothing=0.1)
    losses = fit(model, {"image": (images - 0.5) / 0.25, "label": torch.tensor([0, 1, 2, 3])})
    assert losses[-1] < 0.5 * losses[0]
