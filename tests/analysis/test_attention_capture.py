"""Capture leaves the model as it found it, and ``attention_stats`` accepts what the docs promise."""

import pytest
import torch
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from mimlens.analysis.attention import attention_capture, attention_stats
from mimlens.errors import MimlensError


def tiny_vit(**kwargs):
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5, **kwargs)
    for block in model.blocks:
        block.attn.fused_attn = True
    return model


def tiny_swin():
    model = SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2,), num_heads=(2,))
    for block in model.layers[0].blocks:
        block.attn.fused_attn = True
    return model


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("build", [tiny_vit, tiny_swin])
def test_outputs_unchanged_and_model_restored(build):
    model = build().train()
    images = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        expected = model(images)
    model.train()
    seen = []
    with attention_capture(model, seen.append) as names, torch.no_grad():
        assert not model.training
        captured = model(images)
    torch.testing.assert_close(captured, expected, rtol=1e-5, atol=1e-5)  # explicit vs fused softmax
    assert [c.name for c in seen] == names and len(names) == 2
    assert model.training and all(m.training for m in model.modules())
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))
    assert hook_count(model) == 0


def test_hooks_and_flags_restored_when_the_callback_fails():
    model = tiny_vit().eval()

    def fail(call):
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"), attention_capture(model, fail), torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert hook_count(model) == 0 and all(b.attn.fused_attn for b in model.blocks)


def test_no_attention_map_outlives_its_batch():
    model = tiny_vit().eval()
    refs = []

    def keep_weak_reference(call):
        refs.append(torch.utils.weak.WeakTensorKeyDictionary({call.probs: None}))

    with attention_capture(model, keep_weak_reference), torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert len(refs) == 2 and all(len(r) == 0 for r in refs)


def test_iterables_tuples_and_tensors_give_the_same_statistics():
    model = tiny_vit()
    images = torch.rand(5, 3, 32, 32)
    direct = attention_stats(model, images, batch_size=2)
    from_batches = attention_stats(model, [(images[:3], torch.zeros(3)), (images[3:], torch.zeros(2))])
    assert from_batches.num_images == direct.num_images == 5
    for a, b in zip(direct.distance_px + direct.entropy, from_batches.distance_px + from_batches.entropy, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    assert direct.model == "VisionTransformer"


def test_bad_inputs_raise_mimlens_errors():
    model = tiny_vit()
    with pytest.raises(MimlensError, match=r"\(N, C, H, W\) tensor, got shape \(3, 32, 32\)"):
        attention_stats(model, torch.randn(3, 32, 32))
    with pytest.raises(MimlensError, match="image batch of type list"):
        attention_stats(model, [[[1.0]]])
    with pytest.raises(MimlensError, match="batch_size must be a positive integer"):
        attention_stats(model, torch.rand(1, 3, 32, 32), batch_size=0)
    with pytest.raises(MimlensError, match="saw no images"):
        attention_stats(model, [])
    with pytest.raises(MimlensError, match="cannot capture attention of Sequential"):
        attention_stats(nn.Sequential(nn.Conv2d(3, 3, 1)), torch.rand(1, 3, 8, 8))
