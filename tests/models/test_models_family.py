"""One block index everywhere: the backbone family's blocks are the analyses' layers, the probes' rows, the
linear probe's ``block`` and what ``--drop-last`` keeps — on a Swin (blocks counted across stages) and a ViT."""

import copy

import pytest
import torch
from torch import nn

from mimlens.analysis.attention import attention_stats
from mimlens.analysis.features import block_names
from mimlens.engine.layer_decay import backbone_layout
from mimlens.errors import MimlensError
from mimlens.models import build_model, drop_last_blocks
from mimlens.models.family import family_of, find_family, num_prefix_tokens
from mimlens.tasks.backbone import pooled_features
from mimlens.tasks.probes.layerwise import _select, model_blocks

SMALL_SWIN = {"embed_dim": 16, "num_heads": (1, 2, 4)}  # swin-tiny-64's depths 2-2-6 and window 4, narrower


def _manual_outputs(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Every block's output by walking the modules by hand (the reference: no hooks, no timm helpers)."""
    outputs = []
    if hasattr(model, "layers"):
        x = model.patch_embed(images)
        for stage in model.layers:
            x = stage.downsample(x)
            for block in stage.blocks:
                x = block(x)
                outputs.append(x)
    else:
        x = model.norm_pre(model._pos_embed(model.patch_embed(images)))
        for block in model.blocks:
            x = block(x)
            outputs.append(x)
    return outputs


@pytest.fixture(params=["swin-tiny-64", "vit-micro-32"])
def model(request):
    torch.manual_seed(0)
    kwargs = SMALL_SWIN if request.param.startswith("swin") else {}
    return build_model(request.param, **kwargs).eval()


def test_family_reports_layout_and_prefix_tokens(model):
    family = family_of(model)
    if family.name == "swin":
        assert family.depths(model) == (2, 2, 6) and num_prefix_tokens(model) == 0 and family.hierarchical
        assert [b.stage for b in family.blocks(model)] == [0, 0, 1, 1, 2, 2, 2, 2, 2, 2]
    else:
        assert family.depths(model) == (len(model.blocks),) and num_prefix_tokens(model) == 1
    assert backbone_layout(model) == (family.name, family.depths(model))


@torch.no_grad()
def test_one_block_index_in_analyses_probes_linear_probe_and_drop_last(model):
    family = family_of(model)
    blocks = family.blocks(model)
    size = 64 if family.name == "swin" else 32
    images = torch.rand(2, 3, size, size)
    names = [b.name for b in blocks]
    assert [b.index for b in blocks] == list(range(len(blocks)))
    assert block_names(model) == names  # the analyses' and CKA's layers
    assert [b.name for b in model_blocks(model)] == names  # probe rows
    assert [b.name for b in _select(model_blocks(model), [len(blocks) - 1, 1])] == [names[1], names[-1]]
    stats = attention_stats(model, images, batch_size=2)
    assert [layer.name for layer in stats.layers] == names
    reference = _manual_outputs(model, images)
    for block in blocks:
        pooled = pooled_features(model, images, block=block.index, pool="avg")
        out = reference[block.index]
        expected = out.mean(dim=(1, 2)) if out.ndim == 4 else out[:, num_prefix_tokens(model):].mean(1)
        torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-5)
        dropped = drop_last_blocks(copy.deepcopy(model), len(blocks) - 1 - block.index)
        assert family.blocks(dropped)[-1] == block  # --drop-last K keeps blocks 0 .. L-1-K
        torch.testing.assert_close(pooled_features(dropped, images, block=block.index, pool="avg"), expected,
                                   rtol=1e-5, atol=1e-5)


def test_block_out_of_range_names_the_range(model):
    images = torch.rand(1, 3, 64, 64) if family_of(model).name == "swin" else torch.rand(1, 3, 32, 32)
    count = len(family_of(model).blocks(model))
    with pytest.raises(MimlensError, match=f"block {count} does not exist: .* indices 0 to {count - 1}"):
        pooled_features(model, images, block=count, pool="avg")


def test_unknown_layout_is_named():
    assert find_family(nn.Linear(2, 2)) is None
    with pytest.raises(MimlensError, match="Linear is neither a ViT-family model"):
        family_of(nn.Linear(2, 2))
