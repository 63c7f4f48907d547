"""Optimizer groups, the lr scaling rule and the schedules against their formulas."""

import math

import pytest
import torch

from mimlens.engine.optim import build_optimizer, build_scheduler, no_weight_decay_names, scaled_lr
from mimlens.errors import MimlensError
from mimlens.pretrain import SimMIM


def test_scaled_lr_is_linear_in_the_global_batch():
    assert scaled_lr(4e-3, 32) == pytest.approx(5e-4)
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)


def test_no_weight_decay_for_norms_biases_position_embedding_and_tokens(make_vit):
    model = SimMIM(make_vit(), mask_patch=8)
    names = {id(p): n for n, p in model.named_parameters()}
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    decay = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in optimizer.param_groups}
    assert {"mask_token", "encoder.pos_embed", "encoder.cls_token", "encoder.norm.weight", "encoder.norm.bias",
            "encoder.blocks.0.attn.qkv.bias", "decoder.0.bias"} <= decay[0.0]
    assert {"encoder.blocks.0.attn.qkv.weight", "encoder.patch_embed.proj.weight", "decoder.0.weight"} <= decay[0.05]
    assert decay[0.0].isdisjoint(decay[0.05])
    assert decay[0.0] | decay[0.05] == {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"mask_token", "encoder.pos_embed", "encoder.cls_token"} <= no_weight_decay_names(model)


def test_frozen_parameters_are_left_out(make_vit):
    model = make_vit()
    model.patch_embed.requires_grad_(False)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(model.patch_embed.proj.weight) not in in_optimizer


def _lrs(scheduler, optimizer, total):
    out = []
    for step in range(total + 1):
        scheduler.step_update(step)
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_warmup_then_cosine_matches_the_formula():
    lr, warmup_lr, min_lr, warmup, total = 1e-3, 1e-6, 1e-5, 10, 50
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = build_scheduler(optimizer, total_steps=total, warmup_steps=warmup, min_lr=min_lr, warmup_lr=warmup_lr)
    for step, got in enumerate(_lrs(scheduler, optimizer, total)):
        if step < warmup:
            expected = warmup_lr + (lr - warmup_lr) * step / warmup
        else:
            expected = min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        assert got == pytest.approx(expected, rel=1e-9), step


def test_multistep_decays_at_the_milestones():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, total_steps=30, warmup_steps=5, schedule="multistep", decay_steps=[20])
    lrs = _lrs(scheduler, optimizer, 30)
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(1.0) and lrs[18] == pytest.approx(1.0)
    assert lrs[25] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.1)


def test_schedule_errors_name_the_setting():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(MimlensError, match="warm-up"):
        build_scheduler(optimizer, total_steps=5, warmup_steps=5)
    with pytest.raises(MimlensError, match="optim.schedule"):
        build_scheduler(optimizer, total_steps=5, warmup_steps=1, schedule="linear")
