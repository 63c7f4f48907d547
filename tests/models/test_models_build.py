"""Presets, timm names, the fixed sin-cos position embedding and preprocessing."""

from __future__ import annotations

import math

import pytest
import torch

from mimlens.errors import MimlensError
from mimlens.models import PRESETS, build_model, preprocessing
from mimlens.models.pos_embed import sincos_pos_embed


@pytest.mark.parametrize("name,width", [("vit-micro-32", 48), ("vit-tiny-64", 192), ("swin-tiny-64", 192),
                                        ("swinv2-tiny-64", 192)])
def test_tiny_presets_build_and_forward(name, width):
    model = build_model(name).eval()
    size = PRESETS[name].img_size
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, width)
    assert preprocessing(model) == {"mean": pytest.approx((0.485, 0.456, 0.406)),
                                    "std": pytest.approx((0.229, 0.224, 0.225)), "img_size": size}


def test_vit_tiny_64_is_the_spec_model():
    model = build_model("vit-tiny-64")
    assert model.patch_embed.patch_size == (8, 8) and model.patch_embed.grid_size == (8, 8)
    assert len(model.blocks) == 6 and model.embed_dim == 192 and model.blocks[0].attn.num_heads == 3
    assert model.cls_token is not None
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(2.7e6, rel=0.02)


def test_swin_tiny_64_windows():
    model = build_model("swin-tiny-64")
    assert model.patch_embed.patch_size == (4, 4)
    assert [len(s.blocks) for s in model.layers] == [2, 2, 6]
    assert [s.blocks[0].attn.window_size for s in model.layers] == [(4, 4)] * 3


def test_paper_presets_match_the_paper_settings():
    vit = build_model("vit-base-224", device="meta")
    assert (vit.patch_embed.patch_size, len(vit.blocks), vit.embed_dim, vit.blocks[0].attn.num_heads) == \
        ((16, 16), 12, 768, 12)
    swin = build_model("swin-base-224", device="meta")
    assert [len(s.blocks) for s in swin.layers] == [2, 2, 18, 2] and swin.embed_dim == 128
    assert swin.layers[0].blocks[0].attn.window_size == (7, 7)
    simmim = build_model("simmim-vit-base-224", device="meta")
    assert simmim.rel_pos_bias is not None and simmim.pos_embed is None and len(simmim.blocks) == 12


def test_timm_name_overrides_and_classes():
    model = build_model("timm:vit_small_patch16_224", img_size=32, depth=1, num_classes=3)
    assert model.patch_embed.img_size == (32, 32) and len(model.blocks) == 1 and model.head.out_features == 3
    assert preprocessing(model)["img_size"] == 32


def test_non_square_img_size():
    model = build_model("vit-micro-32", img_size=(32, 48))
    assert preprocessing(model)["img_size"] == (32, 48)


@pytest.mark.parametrize("spec,pattern", [
    ("vit-tiny-46", r"unknown model 'vit-tiny-46'.*close presets: vit-tiny-64"),
    ("vit_small_patch16_224", r"did you mean timm:vit_small_patch16_224\?"),
    ("timm:vit_smal_patch16_224", r"unknown timm model 'vit_smal_patch16_224'.*vit_small_patch16_224"),
])
def test_unknown_names_list_close_ones(spec, pattern):
    with pytest.raises(MimlensError, match=pattern):
        build_model(spec)


def test_bad_arguments():
    with pytest.raises(MimlensError, match="pretrained=False always"):
        build_model("vit-micro-32", pretrained=True)
    with pytest.raises(MimlensError, match="pos_embed must be one of learned, sincos, got 'fixed'"):
        build_model("vit-micro-32", pos_embed="fixed")
    with pytest.raises(MimlensError, match="cannot build 'vit-micro-32'.*no_such_kwarg"):
        build_model("vit-micro-32", no_such_kwarg=1)


# -------------------------------------------------------------------------------------------------- sin-cos

def reference_sincos(rows: int, cols: int, dim: int) -> torch.Tensor:
    """The documented layout written out with math.sin/cos, one token and channel at a time."""
    quarter = dim // 4
    out = torch.zeros(rows * cols, dim, dtype=torch.float64)
    for r in range(rows):
        for c in range(cols):
            for i in range(quarter):
                omega = 10000.0 ** (-i / quarter)
                t = r * cols + c
                out[t, i], out[t, quarter + i] = math.sin(r * omega), math.cos(r * omega)
                out[t, 2 * quarter + i], out[t, 3 * quarter + i] = math.sin(c * omega), math.cos(c * omega)
    return out


def test_sincos_known_values():
    pe = sincos_pos_embed((2, 3), dim=8, num_prefix_tokens=1)[0]
    assert pe.shape == (1 + 6, 8)
    assert torch.equal(pe[0], torch.zeros(8))  # CLS position
    # token (row 1, column 2) is patch 5; ω = (1, 10000^(-1/2) = 0.01)
    expected = [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01),
                math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02)]
    torch.testing.assert_close(pe[1 + 5], torch.tensor(expected))
    torch.testing.assert_close(pe[1:].double(), reference_sincos(2, 3, 8), rtol=0, atol=1e-6)


def test_sincos_on_a_vit_is_fixed_and_correct():
    model = build_model("vit-micro-32", pos_embed="sincos")
    assert not model.pos_embed.requires_grad
    torch.testing.assert_close(model.pos_embed[0, 1:].double(), reference_sincos(4, 4, 48), rtol=0, atol=1e-6)
    assert torch.equal(model.pos_embed[0, 0], torch.zeros(48))
    before = model.pos_embed.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1, weight_decay=0.1)
    model.train()(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    assert torch.equal(model.pos_embed, before)
    learned = build_model("vit-micro-32", pos_embed="learned")
    assert learned.pos_embed.requires_grad


def test_sincos_needs_an_absolute_position_embedding_and_width_divisible_by_4():
    with pytest.raises(MimlensError, match="SwinTransformer has none"):
        build_model("swin-tiny-64", pos_embed="sincos")
    with pytest.raises(MimlensError, match="width divisible by 4, got 42"):
        build_model("vit-micro-32", embed_dim=42, pos_embed="sincos")
