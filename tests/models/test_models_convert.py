"""Foreign checkpoint layouts round-trip: a tiny timm model written in the foreign layout (the inverse mapping
is written here, independently of the converter), saved with torch.save, loaded back through load_model, gives
the same outputs."""

from __future__ import annotations

import argparse
import re

import pytest
import torch
from models_kit import BEIT_PER_BLOCK, BEIT_SHARED, DEIT_DISTILLED, SWIN, SWINV2, VIT, fake_yacs, features, tiny

from mimlens.errors import MimlensError
from mimlens.models import detect_format, load_model
from mimlens.models.weights import read_checkpoint


def assert_loads_same(src: torch.nn.Module, path, spec, num_classes: int = 0, **load_kwargs) -> dict:
    arch, overrides = spec
    fresh = features(load_model(arch, **overrides, num_classes=num_classes)[0])
    model, info = load_model(path, arch=arch, **overrides, num_classes=num_classes, **load_kwargs)
    want = features(src)
    assert not torch.allclose(fresh, want, atol=1e-3), "a freshly initialised model already matches"
    torch.testing.assert_close(features(model), want, rtol=1e-5, atol=1e-5)
    return info


# ----------------------------------------------------------------------------------------------- inverse mappings

def official_swin_layout(model: torch.nn.Module, v2: bool = False) -> dict[str, torch.Tensor]:
    """timm Swin/SwinV2 → official layout: patch merging at the end of the previous stage, ``head`` (not
    ``head.fc``), and the buffers official code saves (indices, attention masks, SwinV2 coordinate tables)."""
    out = {}
    for key, value in model.state_dict().items():
        stage = re.match(r"layers\.(\d+)\.downsample\.(.+)", key)
        if stage:
            key = f"layers.{int(stage.group(1)) - 1}.downsample.{stage.group(2)}"
        out[key.replace("head.fc.", "head.")] = value
    for i, layer in enumerate(model.layers):
        for j, block in enumerate(layer.blocks):
            wh, ww = block.attn.window_size
            prefix = f"layers.{i}.blocks.{j}"
            out[f"{prefix}.attn.relative_position_index"] = torch.zeros(wh * ww, wh * ww, dtype=torch.long)
            if v2:
                out[f"{prefix}.attn.relative_coords_table"] = torch.zeros(1, 2 * wh - 1, 2 * ww - 1, 2)
            if j % 2:
                out[f"{prefix}.attn_mask"] = torch.zeros(4, wh * ww, wh * ww)
    return out


def simmim_wrap(encoder: dict[str, torch.Tensor], dim: int, config) -> dict:
    """SimMIM pre-training checkpoint around an encoder state dict: ``encoder.`` prefix, mask token, decoder
    (1 x 1 conv from the encoder width ``dim`` to stride² · 3 channels, here stride 8)."""
    weights = {f"encoder.{k}": v for k, v in encoder.items()}
    weights["encoder.mask_token"] = torch.zeros(1, 1, dim)
    weights["decoder.0.weight"] = torch.randn(8 * 8 * 3, dim, 1, 1)
    weights["decoder.0.bias"] = torch.randn(8 * 8 * 3)
    return {"model": weights, "optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {"last_epoch": 3},
            "max_accuracy": 0.0, "epoch": 3, "config": config}


# ------------------------------------------------------------------------------------------------------ SimMIM

def test_simmim_vit_to_beit(tmp_path):
    src = tiny(BEIT_SHARED)
    weights = dict(src.state_dict())
    weights["rel_pos_bias.relative_position_index"] = torch.zeros(17, 17, dtype=torch.long)
    with fake_yacs() as CfgNode:
        config = CfgNode({"MODEL": CfgNode({"TYPE": "vit", "VIT": CfgNode({"USE_SHARED_RPB": True})})})
        torch.save(simmim_wrap(weights, 48, config), tmp_path / "simmim_vit.pth")
    info = assert_loads_same(src, tmp_path / "simmim_vit.pth", BEIT_SHARED)
    assert info["format"] == "simmim-vit"
    assert set(info["dropped_keys"]) == {"decoder.0.weight", "decoder.0.bias", "mask_token",
                                         "rel_pos_bias.relative_position_index"}
    assert info["mean"] == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize("spec,v2", [(SWIN, False), (SWINV2, True)], ids=["swin", "swinv2"])
def test_simmim_swin_pretrain(tmp_path, spec, v2):
    src = tiny(spec)
    with fake_yacs() as CfgNode:
        config = CfgNode({"MODEL": CfgNode({"SWINV2": CfgNode({"PRETRAINED_WINDOW_SIZES": [0, 0, 0]})})})
        torch.save(simmim_wrap(official_swin_layout(src, v2), 64, config), tmp_path / "simmim_swin.pth")
    state = read_checkpoint(tmp_path / "simmim_swin.pth")
    assert "layers.0.downsample.reduction.weight" in {k[len("encoder."):] for k in state["model"]}
    info = assert_loads_same(src, tmp_path / "simmim_swin.pth", spec)
    assert info["format"] == ("simmim-swinv2" if v2 else "simmim-swin")
    assert "mask_token" in info["dropped_keys"] and "decoder.0.weight" in info["dropped_keys"]
    assert "layers.0.blocks.1.attn_mask" in info["dropped_keys"]
    if v2:  # windows 4, 4 and 2 (clamped to the 2 x 2 map of the last stage)
        assert info["pretrained_window_sizes"] == [4, 4, 2]


@pytest.mark.parametrize("spec,v2", [(SWIN, False), (SWINV2, True)], ids=["swin", "swinv2"])
def test_official_swin_finetuned_head(tmp_path, spec, v2):
    src = tiny(spec, num_classes=5)
    weights = official_swin_layout(src, v2)
    assert "head.weight" in weights and "layers.1.downsample.reduction.weight" in weights
    torch.save({"model": weights, "epoch": 30}, tmp_path / "swin_ft.pth")
    info = assert_loads_same(src, tmp_path / "swin_ft.pth", spec, num_classes=5)
    assert info["format"] == ("swinv2" if v2 else "swin")
    assert info["missing_keys"] == [] and info["dropped_head_keys"] == []


def test_swinv2_pretrained_window_sizes_from_config(tmp_path):
    src = tiny(SWINV2)
    with fake_yacs() as CfgNode:
        config = CfgNode({"MODEL": CfgNode({"SWINV2": CfgNode({"PRETRAINED_WINDOW_SIZES": [0, 6, 0]})})})
        torch.save(simmim_wrap(official_swin_layout(src, True), 64, config), tmp_path / "v2.pth")
    _, info = load_model(tmp_path / "v2.pth", arch=SWINV2[0], **SWINV2[1])
    assert info["pretrained_window_sizes"] == [4, 6, 2]


def test_swin_relative_position_table_resized_for_new_window(tmp_path):
    src = tiny(SWIN)
    with torch.no_grad():
        for name, p in src.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.copy_(torch.arange(p.shape[1], dtype=p.dtype).expand_as(p) + 0.5)
    torch.save({"model": official_swin_layout(src)}, tmp_path / "swin.pth")
    arch, overrides = SWIN
    model, info = load_model(tmp_path / "swin.pth", arch=arch, **{**overrides, "window_size": 2})
    table = model.layers[0].blocks[0].attn.relative_position_bias_table
    assert table.shape == (9, 2)  # (2·2 − 1)² rows, 2 heads
    # interpolating a table that is constant per head gives the same constant
    torch.testing.assert_close(table, torch.tensor([[0.5, 1.5]]).expand(9, 2), rtol=0, atol=1e-4)
    assert "layers.0.blocks.0.attn.relative_position_bias_table" in info["resized_keys"]


# ----------------------------------------------------------------------------------------------------- MAE, MoCo

def test_mae_training_checkpoint(tmp_path):
    src = tiny(VIT)
    weights = dict(src.state_dict())
    weights["mask_token"] = torch.zeros(1, 1, 32)
    weights["decoder_embed.weight"], weights["decoder_embed.bias"] = torch.randn(32, 48), torch.randn(32)
    weights["decoder_pos_embed"] = torch.randn(1, 17, 32)
    for name, shape in {"norm1.weight": (32,), "attn.qkv.weight": (96, 32), "mlp.fc1.weight": (128, 32)}.items():
        weights[f"decoder_blocks.0.{name}"] = torch.randn(shape)
    weights["decoder_norm.weight"], weights["decoder_pred.weight"] = torch.randn(32), torch.randn(8 * 8 * 3, 32)
    args = argparse.Namespace(model="mae_vit_micro", mask_ratio=0.75, norm_pix_loss=True, input_size=32, lr=None)
    torch.save({"model": weights, "optimizer": {"state": {}}, "epoch": 399, "scaler": {"scale": 65536.0},
                "args": args}, tmp_path / "checkpoint-399.pth")
    info = assert_loads_same(src, tmp_path / "checkpoint-399.pth", VIT)
    assert info["format"] == "mae"
    assert {k for k in info["dropped_keys"] if not k.startswith("decoder_")} == {"mask_token"}


def test_mae_released_encoder(tmp_path):
    src = tiny(VIT)
    torch.save({"model": src.state_dict()}, tmp_path / "mae_pretrain_vit_micro.pth")
    info = assert_loads_same(src, tmp_path / "mae_pretrain_vit_micro.pth", VIT)
    assert (info["format"], info["wrapper"], info["dropped_keys"]) == ("timm", "model", [])


def moco_projector(prefix: str, dim: int) -> dict[str, torch.Tensor]:
    """MoCo v3's 3-layer projector MLP (Linear, BN, ReLU, Linear, BN, ReLU, Linear, BN without affine)."""
    out = {f"{prefix}.0.weight": torch.randn(64, dim), f"{prefix}.3.weight": torch.randn(64, 64),
           f"{prefix}.6.weight": torch.randn(16, 64)}
    for i in (1, 4, 7):
        if i != 7:
            out[f"{prefix}.{i}.weight"], out[f"{prefix}.{i}.bias"] = torch.ones(64), torch.zeros(64)
        size = 16 if i == 7 else 64
        out[f"{prefix}.{i}.running_mean"], out[f"{prefix}.{i}.running_var"] = torch.zeros(size), torch.ones(size)
        out[f"{prefix}.{i}.num_batches_tracked"] = torch.tensor(10)
    return out


@pytest.mark.parametrize("encoder", ["base", "momentum"])
def test_mocov3_base_and_momentum_encoders(tmp_path, encoder):
    base, momentum = tiny(VIT, seed=1), tiny(VIT, seed=2)
    weights = {}
    for name, model in (("base_encoder", base), ("momentum_encoder", momentum)):
        weights.update({f"module.{name}.{k}": v for k, v in model.state_dict().items()})
        weights.update(moco_projector(f"module.{name}.head", 48))
    weights.update({"module.predictor.0.weight": torch.randn(64, 16), "module.predictor.1.running_mean":
                    torch.zeros(64)})
    torch.save({"epoch": 300, "arch": "vit_micro", "state_dict": weights, "optimizer": {"state": {}},
                "scaler": {}}, tmp_path / "linear-vit-b-300ep.pth.tar")
    src = base if encoder == "base" else momentum
    info = assert_loads_same(src, tmp_path / "linear-vit-b-300ep.pth.tar", VIT, moco_encoder=encoder)
    assert info["format"] == "mocov3" and info["encoder"] == encoder
    other = "momentum_encoder" if encoder == "base" else "base_encoder"
    assert f"module.{other}.blocks.0.attn.qkv.weight" in info["dropped_keys"]
    assert "head.0.weight" in info["dropped_keys"] and "module.predictor.0.weight" in info["dropped_keys"]


def test_mocov3_unknown_encoder(tmp_path):
    weights = {f"module.base_encoder.{k}": v for k, v in tiny(VIT).state_dict().items()}
    torch.save({"state_dict": weights}, tmp_path / "moco.pth.tar")
    with pytest.raises(MimlensError, match="'base' or 'momentum'"):
        load_model(tmp_path / "moco.pth.tar", arch="vit-micro-32", moco_encoder="target")


# ----------------------------------------------------------------------------------------------------- DeiT, BEiT

def test_deit_distilled_training_checkpoint(tmp_path):
    src, ema = tiny(DEIT_DISTILLED, num_classes=4), tiny(DEIT_DISTILLED, seed=5, num_classes=4)
    assert "dist_token" in src.state_dict() and "head_dist.weight" in src.state_dict()
    args = argparse.Namespace(model="deit_micro_distilled", distillation_type="hard", teacher_model="regnety_160")
    torch.save({"model": src.state_dict(), "model_ema": ema.state_dict(), "optimizer": {}, "lr_scheduler": {},
                "epoch": 299, "scaler": {}, "args": args}, tmp_path / "deit.pth")
    info = assert_loads_same(src, tmp_path / "deit.pth", DEIT_DISTILLED, num_classes=4)
    assert info["format"] == "deit" and info["wrapper"] == "model"


def test_beit_pretrain_shared_table_into_per_block_model(tmp_path):
    src = tiny(BEIT_SHARED)
    weights = dict(src.state_dict())
    weights.update({"mask_token": torch.zeros(1, 1, 48), "lm_head.weight": torch.randn(8192, 48),
                    "lm_head.bias": torch.randn(8192),
                    "rel_pos_bias.relative_position_index": torch.zeros(17, 17, dtype=torch.long)})
    assert weights["rel_pos_bias.relative_position_bias_table"].shape == ((2 * 4 - 1) ** 2 + 3, 3)
    torch.save({"model": weights}, tmp_path / "beit_pt.pth")
    # the per-block model gives every block the shared table, so it computes the same function
    info = assert_loads_same(src, tmp_path / "beit_pt.pth", BEIT_PER_BLOCK)
    assert info["format"] == "beit" and info["rel_pos_bias"] == "shared table copied into every block"
    assert {"mask_token", "lm_head.weight", "lm_head.bias"} <= set(info["dropped_keys"])


def test_beit_module_wrapper_per_block_tables(tmp_path):
    src = tiny(BEIT_PER_BLOCK)
    weights = dict(src.state_dict())
    for i in range(2):
        weights[f"blocks.{i}.attn.relative_position_index"] = torch.zeros(17, 17, dtype=torch.long)
    torch.save({"module": weights}, tmp_path / "beit_ft.pth")
    info = assert_loads_same(src, tmp_path / "beit_ft.pth", BEIT_PER_BLOCK)
    assert info["format"] == "beit" and info["wrapper"] == "module"


def test_beit_table_resized_keeps_the_three_extra_rows(tmp_path):
    src = tiny(BEIT_PER_BLOCK)
    with torch.no_grad():
        for i in range(2):
            table = src.blocks[i].attn.relative_position_bias_table  # (7·7 + 3, 3 heads)
            table[:-3] = torch.tensor([1.0, 2.0, 3.0])
            table[-3:] = torch.tensor([[10.0, 11.0, 12.0], [20.0, 21.0, 22.0], [30.0, 31.0, 32.0]])
    torch.save({"model": src.state_dict()}, tmp_path / "beit.pth")
    arch, overrides = BEIT_PER_BLOCK
    model, info = load_model(tmp_path / "beit.pth", arch=arch, **{**overrides, "img_size": 48})  # grid 4 → 6
    table = model.blocks[1].attn.relative_position_bias_table
    assert table.shape == ((2 * 6 - 1) ** 2 + 3, 3)
    torch.testing.assert_close(table[:-3], torch.tensor([1.0, 2.0, 3.0]).expand(121, 3), rtol=0, atol=1e-4)
    torch.testing.assert_close(table[-3:], src.blocks[1].attn.relative_position_bias_table[-3:])
    assert "blocks.1.attn.relative_position_bias_table" in info["resized_keys"]


# ---------------------------------------------------------------------------------------------- format detection

@pytest.mark.parametrize("state,fmt", [
    ({"cls_token": torch.zeros(1), "blocks.0.norm1.weight": torch.zeros(1)}, "timm"),
    ({"state_dict": {"patch_embed.proj.weight": torch.zeros(1)}}, "timm"),
    ({"model": {"encoder.blocks.0.attn.q_bias": torch.zeros(1)}}, "simmim-vit"),
    ({"model": {"encoder.layers.0.blocks.0.attn.qkv.weight": torch.zeros(1)}}, "simmim-swin"),
    ({"model": {"encoder.layers.0.blocks.0.attn.cpb_mlp.0.weight": torch.zeros(1)}}, "simmim-swinv2"),
    ({"model": {"layers.0.downsample.reduction.weight": torch.zeros(1)}}, "swin"),
    ({"model": {"decoder_pred.weight": torch.zeros(1), "cls_token": torch.zeros(1)}}, "mae"),
    ({"state_dict": {"module.base_encoder.cls_token": torch.zeros(1)}}, "mocov3"),
    ({"model": {"dist_token": torch.zeros(1)}}, "deit"),
    ({"module": {"rel_pos_bias.relative_position_bias_table": torch.zeros(1)}}, "beit"),
])
def test_detect_format(state, fmt):
    assert detect_format(state, "x.pth") == fmt


def test_detect_format_without_weights():
    with pytest.raises(MimlensError, match=r"x\.pth: no state dict found.*top-level keys: epoch, optimizer"):
        detect_format({"epoch": 3, "optimizer": {}}, "x.pth")


def test_foreign_format_into_wrong_family(tmp_path):
    torch.save({"model": official_swin_layout(tiny(SWIN))}, tmp_path / "swin.pth")
    with pytest.raises(MimlensError, match=r"swin\.pth holds a checkpoint of format swin .*SwinTransformer "
                                           r"\(an arch such as swin-base-224 builds one\), but the arch builds a "
                                           r"VisionTransformer; no preset fits it"):
        load_model(tmp_path / "swin.pth", arch="vit-micro-32")
