import pytest
import timm
import torch

from mimlens.engine.layer_decay import layer_decay_param_groups
from mimlens.errors import MimlensError

DECAY, WD = 0.65, 0.05
VIT = dict(pretrained=False, img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2)
SWIN = dict(pretrained=False, img_size=32, embed_dim=16, depths=(2, 1, 2), num_heads=(1, 2, 4), window_size=2)


# Independent restatements of the references, on the references' own parameter names.

def beit_scale(name: str, depth: int, decay: float) -> float:
    """BEiT / MAE: stem 0, block i -> i + 1, anything else -> depth + 1; scale decay^(depth + 1 - id)."""
    if name.startswith("patch_embed") or name in ("cls_token", "reg_token", "dist_token", "mask_token", "pos_embed"):
        layer = 0
    elif name.startswith("blocks."):
        layer = int(name.split(".")[1]) + 1
    else:
        layer = depth + 1
    return decay ** (depth + 1 - layer)


def simmim_swin_scale(timm_name: str, depths: tuple[int, ...], decay: float) -> float:
    """SimMIM's get_swin_layer on the official layout, where stage s ends with layers.s.downsample (timm opens
    stage s + 1 with it)."""
    parts = timm_name.split(".")
    if parts[0] == "layers" and parts[2] == "downsample":
        parts[1] = str(int(parts[1]) - 1)
    total = sum(depths)
    if parts[0] == "patch_embed" or parts[0] == "mask_token":
        layer = 0
    elif parts[0] == "layers":
        stage = int(parts[1])
        if parts[2] == "downsample":
            layer = sum(depths[: stage + 1])
        else:
            layer = sum(depths[:stage]) + int(parts[3]) + 1
    else:
        layer = total + 1
    return decay ** (total + 1 - layer)


def param_group_rows(groups):
    """One row per parameter from the groups' own ``param_names`` (what the engine writes to param_groups.json
    names the same parameters from the model)."""
    return [{"name": n, "lr_scale": g["lr_scale"], "weight_decay": g["weight_decay"]}
            for g in groups for n in g["param_names"]]


def _rows(model, heads=None, decay=DECAY):
    groups = layer_decay_param_groups(model, WD, decay, heads=heads)
    return {row["name"]: row for row in param_group_rows(groups)}


def _check(model, expected_scale, heads=None, decay=DECAY):
    rows = _rows(model, heads, decay)
    names = [n for n, _ in model.named_parameters()]
    heads_names = [f"head.{n}" for n, _ in heads.named_parameters()] if heads is not None else []
    assert sorted(rows) == sorted(names + heads_names)
    skip = model.no_weight_decay()
    params = dict(model.named_parameters())
    for name in names:
        assert rows[name]["lr_scale"] == pytest.approx(expected_scale(name)), name
        no_decay = params[name].ndim == 1 or name in skip
        assert rows[name]["weight_decay"] == (0.0 if no_decay else WD), name
    for name in heads_names:
        assert rows[name]["lr_scale"] == 1.0
    return rows


@pytest.mark.parametrize("num_classes", [0, 5])
@pytest.mark.parametrize("extra", [dict(), dict(global_pool="avg"), dict(reg_tokens=2), dict(class_token=False,
                                                                                             global_pool="avg")])
def test_vit_follows_beit_mae(num_classes, extra):
    model = timm.create_model("vit_tiny_patch16_224", num_classes=num_classes, **VIT, **extra)
    rows = _check(model, lambda n: beit_scale(n, 3, DECAY))
    assert rows["blocks.2.attn.qkv.weight"]["lr_scale"] == pytest.approx(DECAY)  # last block: one factor
    assert rows["patch_embed.proj.weight"]["lr_scale"] == pytest.approx(DECAY**4)
    top = "fc_norm.weight" if extra.get("global_pool") == "avg" else "norm.weight"
    assert rows[top]["lr_scale"] == 1.0
    if "reg_tokens" in extra:
        assert rows["reg_token"]["lr_scale"] == pytest.approx(DECAY**4)


def test_deit_distillation_token_is_stem():
    model = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=4, **VIT)
    rows = _check(model, lambda n: beit_scale(n, 3, DECAY))
    assert rows["dist_token"]["lr_scale"] == pytest.approx(DECAY**4) and rows["head_dist.weight"]["lr_scale"] == 1


@pytest.mark.parametrize("num_classes", [0, 5])
@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_beit_shared_relative_position_bias_is_top(num_classes, global_pool):
    model = timm.create_model("beit_base_patch16_224", num_classes=num_classes, use_abs_pos_emb=False,
                              use_rel_pos_bias=False, use_shared_rel_pos_bias=True, init_values=0.1,
                              global_pool=global_pool, **VIT)
    rows = _check(model, lambda n: beit_scale(n, 3, DECAY))
    assert rows["rel_pos_bias.relative_position_bias_table"] == {
        "name": "rel_pos_bias.relative_position_bias_table", "lr_scale": 1.0, "weight_decay": 0.0}
    assert rows["blocks.0.gamma_1"]["lr_scale"] == pytest.approx(DECAY**3)


@pytest.mark.parametrize("num_classes", [0, 5])
@pytest.mark.parametrize("arch", ["swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256"])
def test_swin_follows_simmim(num_classes, arch):
    model = timm.create_model(arch, num_classes=num_classes, **SWIN)
    rows = _check(model, lambda n: simmim_swin_scale(n, (2, 1, 2), 0.9), decay=0.9)
    # patch merging shares the layer of the last block before it: stage 0's block 1, stage 1's block 0
    assert rows["layers.1.downsample.reduction.weight"]["lr_scale"] == pytest.approx(
        rows["layers.0.blocks.1.attn.qkv.weight"]["lr_scale"]) == pytest.approx(0.9**4)
    assert rows["layers.2.downsample.reduction.weight"]["lr_scale"] == pytest.approx(0.9**3)
    assert rows["layers.2.blocks.1.attn.qkv.weight"]["lr_scale"] == pytest.approx(0.9)
    assert rows["norm.weight"]["lr_scale"] == 1.0


def test_task_head_at_scale_one_with_names_and_weight_decay():
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, **VIT)
    heads = torch.nn.Sequential(torch.nn.Linear(32, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    rows = _check(model, lambda n: beit_scale(n, 3, DECAY), heads=heads)
    assert rows["head.0.weight"] == {"name": "head.0.weight", "lr_scale": 1.0, "weight_decay": WD}
    assert rows["head.1.weight"]["weight_decay"] == 0.0 and rows["head.2.bias"]["weight_decay"] == 0.0
    groups = layer_decay_param_groups(model, WD, DECAY, heads=heads, prefix="model.encoder.",
                                      heads_prefix="model.head.")
    names = [n for g in groups for n in g["param_names"]]
    assert "model.encoder.blocks.0.attn.qkv.weight" in names and "model.head.2.weight" in names


def test_groups_drive_adamw_and_the_scheduler_scales_once():
    from mimlens.engine import build_scheduler

    model = timm.create_model("vit_tiny_patch16_224", num_classes=3, **VIT)
    groups = layer_decay_param_groups(model, WD, 0.5)
    assert all("lr" not in g and set(g) == {"params", "param_names", "lr_scale", "weight_decay"} for g in groups)
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    scheduler = build_scheduler(optimizer, total_steps=10, warmup_steps=2, min_lr=0.0, warmup_lr=0.0)
    scheduler.step_update(2)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"])
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    from mimlens.engine.optim import param_group_rows as engine_rows

    rows = engine_rows(model, optimizer)
    assert [r["name"] for r in rows] == [n for g in groups for n in g["param_names"]]
    assert len(rows) == len(list(model.parameters()))


def test_frozen_backbone_other_families_and_bad_decay():
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, **VIT).requires_grad_(False)
    head = torch.nn.Linear(32, 2)
    assert [r["name"] for r in param_group_rows(layer_decay_param_groups(model, WD, DECAY, heads=head))] == [
        "head.weight", "head.bias"]
    with pytest.raises(MimlensError, match="no trainable parameters"):
        layer_decay_param_groups(model, WD, DECAY)
    convnet = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(MimlensError, match="layer_decay 0.65 needs a ViT"):
        layer_decay_param_groups(convnet, WD, DECAY)
    assert {r["lr_scale"] for r in param_group_rows(layer_decay_param_groups(convnet, WD, 1.0))} == {1.0}
    with pytest.raises(MimlensError, match="layer_decay must lie in"):
        layer_decay_param_groups(model, WD, 1.5)
