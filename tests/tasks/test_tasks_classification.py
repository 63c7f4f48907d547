import math

import pytest
import torch

from mimlens.engine import build_optimizer, build_scheduler
from mimlens.errors import MimlensError
from mimlens.models import build_model, drop_last_blocks
from mimlens.tasks.classification import Classifier, LinearProbe, TopKAccuracy, layer_decay_param_groups
from mimlens.tasks.objective import TaskObjective


def _scales(model, decay, heads=None):
    """{parameter name: (lr_scale, weight_decay)} from the groups."""
    names = {id(p): n for n, p in model.named_parameters()}
    if heads is not None:
        names.update({id(p): "HEAD." + n for n, p in heads.named_parameters()})
    out = {}
    for group in layer_decay_param_groups(model, 0.05, decay, heads=heads):
        assert "lr" not in group  # the optimizer's base lr applies; the scheduler multiplies lr_scale
        for p in group["params"]:
            out[names[id(p)]] = (group["lr_scale"], group["weight_decay"])
    return out


def test_vit_layer_decay_scales_per_block():
    model = build_model("vit-micro-32", num_classes=4)  # depth 3
    d, depth = 0.5, 3
    scales = _scales(model, d)
    assert len(scales) == len(list(model.parameters()))
    for name, (scale, wd) in scales.items():
        if name.startswith(("cls_token", "pos_embed", "patch_embed")):
            expected = d ** (depth + 1)
        elif name.startswith("blocks."):
            expected = d ** (depth - int(name.split(".")[1]))
        elif name.startswith("norm."):
            expected = 1.0  # the final norm is in the top group (BEiT, MAE)
        else:
            assert name.startswith("head.")
            expected = 1.0
        assert scale == pytest.approx(expected), name
        no_decay = name in ("cls_token", "pos_embed") or name.endswith(".bias") or "norm" in name
        assert wd == (0.0 if no_decay else 0.05), name


def test_vit_layer_decay_after_dropping_blocks():
    model = drop_last_blocks(build_model("vit-micro-32"), 1)
    scales = _scales(model, 0.5)
    assert scales["blocks.1.attn.qkv.weight"][0] == pytest.approx(0.5)
    assert scales["blocks.0.attn.qkv.weight"][0] == pytest.approx(0.25)
    assert scales["patch_embed.proj.weight"][0] == pytest.approx(0.125)


def test_swin_layer_decay_counts_blocks_across_stages():
    model = build_model("swin-tiny-64", num_classes=4, embed_dim=16, num_heads=(1, 2, 4))  # depths 2-2-6: 10 blocks
    d, total = 0.9, 10
    starts = [0, 2, 4]
    for name, (scale, wd) in _scales(model, d).items():
        parts = name.split(".")
        if name.startswith("patch_embed"):
            expected = d ** (total + 1)
        elif name.startswith("layers.") and parts[2] == "blocks":
            expected = d ** (total - (starts[int(parts[1])] + int(parts[3])))
        elif name.startswith("layers.") and parts[2] == "downsample":
            expected = d ** (total + 1 - starts[int(parts[1])])  # with the last block before it (SimMIM)
        elif name.startswith("norm."):
            expected = 1.0
        else:
            assert name.startswith("head.")
            expected = 1.0
        assert scale == pytest.approx(expected), name
        if "relative_position_bias_table" in name:
            assert wd == 0.0


def test_heads_join_at_scale_one_and_frozen_backbone_is_left_out():
    backbone = build_model("vit-micro-32")
    head = torch.nn.Linear(48, 3)
    scales = _scales(backbone, 0.5, heads=head)
    assert scales["HEAD.weight"] == (1.0, 0.05) and scales["HEAD.bias"] == (1.0, 0.0)
    probe = LinearProbe(build_model("vit-micro-32"), 3, 48)
    groups = layer_decay_param_groups(probe.encoder, 0.0, 0.5, heads=probe.head)
    assert sum(len(g["params"]) for g in groups) == 2  # the linear layer's weight and bias (BN has no affine)
    with pytest.raises(MimlensError, match="layer_decay"):
        layer_decay_param_groups(backbone, 0.05, 0.0)


def _expected_lr(t, base, total, warmup, warmup_lr, min_lr):
    if t < warmup:
        return warmup_lr + t * (base - warmup_lr) / warmup
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


def test_scheduler_applies_lr_scale_exactly_once():
    objective = TaskObjective(Classifier(build_model("vit-micro-32"), 4), loss=None)
    base, total, warmup = 1e-3, 12, 3
    optimizer = build_optimizer(objective, lr=base, weight_decay=0.05, layer_decay=0.5)
    assert {g["lr"] for g in optimizer.param_groups} == {base}  # unscaled until the scheduler sets it
    scheduler = build_scheduler(optimizer, total_steps=total, warmup_steps=warmup, min_lr=1e-6, warmup_lr=1e-7)
    for t in range(total + 1):
        scheduler.step_update(t)
        expected = _expected_lr(t, base, total, warmup, 1e-7, 1e-6)
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(expected * group["lr_scale"], rel=1e-9)
    stem = [g for g in optimizer.param_groups if g["lr_scale"] == pytest.approx(0.5**4)]
    assert stem and stem[0]["lr"] == pytest.approx(1e-6 * 0.5**4)  # not 0.5**8: no double scaling


def test_top_k_accuracy_hand_computed():
    logits = torch.tensor([[0.1, 0.9, 0.0, 0.3, 0.2, 0.4],  # target 1: top-1 hit
                           [0.9, 0.1, 0.8, 0.7, 0.6, 0.5],  # target 5: rank 5, top-5 hit
                           [0.9, 0.1, 0.8, 0.7, 0.6, 0.5]])  # target 1: rank 6, miss
    acc = TopKAccuracy()
    acc.update(logits[:2], torch.tensor([1, 5]))
    acc.update(logits[2:], torch.tensor([1]))
    assert acc.compute() == pytest.approx({"top1": 1 / 3, "top5": 2 / 3})
    small = TopKAccuracy()
    small.update(torch.tensor([[0.2, 0.8]]), torch.tensor([0]))
    assert small.compute() == {"top1": 0.0}  # top-5 is undefined with 2 classes


def test_linear_probe_keeps_backbone_frozen_in_eval_mode():
    backbone = build_model("vit-micro-32", drop_rate=0.5)
    probe = LinearProbe(backbone, 3, 48, pool="avg").train()
    assert not backbone.training and probe.head.training
    images = torch.randn(4, 3, 32, 32)
    torch.nn.functional.cross_entropy(probe(images), torch.tensor([0, 1, 2, 0])).backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert probe.head[1].weight.grad is not None
    assert not probe.head[0].affine
