"""MoCo v3: InfoNCE against a loop, momentum schedule and update, MLP shapes, frozen patch embedding."""

import math

import pytest
import torch
from torch import nn

from mimlens.pretrain import MoCo
from mimlens.pretrain.moco import contrastive_loss, momentum_at


def test_contrastive_loss_equals_a_loop_over_queries():
    g = torch.Generator().manual_seed(0)
    q, k, tau = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g), 0.2
    qn, kn = q / q.norm(dim=1, keepdim=True), k / k.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(6):
        logits = [float(qn[i] @ kn[j]) / tau for j in range(6)]
        total += -logits[i] + math.log(sum(math.exp(v) for v in logits))
    assert contrastive_loss(q, k, tau).item() == pytest.approx(total / 6 * 2 * tau, rel=1e-5)


def test_momentum_follows_a_cosine_from_base_to_one():
    assert momentum_at(0, 100, 0.99) == pytest.approx(0.99)
    assert momentum_at(50, 100, 0.99) == pytest.approx(0.995)
    assert momentum_at(100, 100, 0.99) == pytest.approx(1.0)


def _moco(tiny, **kwargs):
    torch.manual_seed(0)
    return MoCo(tiny["vit"](), dim=16, mlp_dim=32, **kwargs)


def test_momentum_update_is_an_exponential_moving_average(tiny):
    model = _moco(tiny)
    with torch.no_grad():
        for p in [*model.encoder.parameters(), *model.projector.parameters()]:
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in model.momentum_encoder.parameters()]
    base = list(model.encoder.parameters())
    model.on_step(50, 100)
    assert model.momentum == pytest.approx(0.995)
    for ema, old, new in zip(model.momentum_encoder.parameters(), before, base, strict=True):
        torch.testing.assert_close(ema, 0.995 * old + 0.005 * new)


def test_mlps_are_moco_v3_shaped_and_the_momentum_branch_is_frozen(tiny):
    model = _moco(tiny)
    kinds = [type(m).__name__ for m in model.projector]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert [type(m).__name__ for m in model.predictor] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert all(m.bias is None for m in model.projector if isinstance(m, nn.Linear))
    assert not model.projector[-1].affine and not model.predictor[-1].affine
    assert model.projector[0].in_features == 48 and model.predictor[-2].out_features == 16
    assert not any(p.requires_grad for p in model.momentum_encoder.parameters())
    assert not any(p.requires_grad for p in model.momentum_projector.parameters())


def test_frozen_patch_embedding_gets_no_gradient(tiny, images):
    model = _moco(tiny)
    model({"view1": images, "view2": images.flip(3)})["loss"].backward()
    assert model.encoder.patch_embed.proj.weight.grad is None
    assert model.encoder.blocks[0].attn.qkv.weight.grad is not None
    trainable = _moco(tiny, freeze_patch_embed=False)
    assert trainable.encoder.patch_embed.proj.weight.requires_grad


def test_a_few_steps_lower_the_loss(tiny, images, fit):
    model = _moco(tiny, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    batch = {"view1": images, "view2": (images + 0.1 * torch.randn(images.shape, generator=g)).clamp(0, 1)}
    losses = fit(model, batch, steps=15)
    assert losses[-1] < 0.8 * losses[0]
