"""drop_last_blocks: the same backbone without its last k blocks, checked against models built independently."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from models_kit import BEIT_PER_BLOCK, SWIN, SWINV2, VIT, tiny

from mimlens.errors import MimlensError
from mimlens.models import build_model, drop_last_blocks

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(11))


def shallower(spec, state: dict, **kwargs) -> torch.nn.Module:
    """A model built with fewer blocks, loaded strictly with the matching part of a deeper model's weights."""
    arch, overrides = spec
    model = build_model(arch, **{**overrides, **kwargs})
    model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()}, strict=True)
    return model.eval()


@pytest.mark.parametrize("spec", [VIT, BEIT_PER_BLOCK], ids=["vit", "beit"])
def test_vit_family_equals_a_shallower_model(spec):
    depth = 3
    model = tiny(spec, depth=depth)
    reference = shallower(spec, model.state_dict(), depth=depth - 1)
    assert drop_last_blocks(model, 1) is model
    assert len(model.blocks) == depth - 1 and model.dropped_last_blocks == 1
    assert len(model.feature_info) == depth - 1
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(X), reference.forward_features(X))
    drop_last_blocks(model, 1)
    assert len(model.blocks) == depth - 2 and model.dropped_last_blocks == 2


@pytest.mark.parametrize("spec", [SWIN, SWINV2], ids=["swin", "swinv2"])
def test_swin_within_the_last_stage_equals_a_shallower_model(spec):
    model = tiny(spec)  # depths 2-2-2
    reference = shallower(spec, model.state_dict(), depths=(2, 2, 1))
    drop_last_blocks(model, 1)
    assert [len(s.blocks) for s in model.layers] == [2, 2, 1]
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(X), reference.forward_features(X))


@pytest.mark.parametrize("spec", [SWIN, SWINV2], ids=["swin", "swinv2"])
def test_swin_emptied_stage_is_removed_with_its_patch_merging(spec):
    model = tiny(spec, num_classes=3)
    original = copy.deepcopy(model)
    drop_last_blocks(model, 3)  # the 2 blocks of stage 3, then one of stage 2
    assert [len(s.blocks) for s in model.layers] == [2, 1]
    assert model.num_features == 32 and len(model.feature_info) == 2
    assert model.norm.normalized_shape == (32,) and model.head.fc.in_features == 32
    with torch.no_grad():
        # stages 1-2 of the original (stage 2 without its last block), then a fresh final norm (identity affine)
        x = original.patch_embed(X)
        x = original.layers[0](x)
        x = original.layers[1].downsample(x)
        x = original.layers[1].blocks[0](x)
        torch.testing.assert_close(model.forward_features(X), F.layer_norm(x, (32,)))
        assert model(X).shape == (2, 3)
    assert "layers.2.downsample.reduction.weight" not in model.state_dict()


def test_swin_head_pooling_kept_after_stage_removal():
    model = drop_last_blocks(tiny(SWIN, num_classes=3), 2)
    assert model.head.global_pool.pool_type == "avg" and model.num_classes == 3


@pytest.mark.parametrize("k", [-1, 3, 2.0, True])
def test_bad_k(k):
    with pytest.raises(MimlensError, match=r"0 <= k < 3 \(the number of blocks\)"):
        drop_last_blocks(build_model("vit-micro-32"), k)


def test_k_zero_and_unsupported_models():
    model = drop_last_blocks(build_model("vit-micro-32"), 0)
    assert len(model.blocks) == 3 and model.dropped_last_blocks == 0
    with pytest.raises(MimlensError, match="supports ViT/DeiT/BEiT and Swin/SwinV2, got Linear"):
        drop_last_blocks(torch.nn.Linear(2, 2), 1)
