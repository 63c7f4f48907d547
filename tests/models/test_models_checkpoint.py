"""Reading checkpoints safely and the exact key-set policy of load_checkpoint."""

from __future__ import annotations

import argparse
import os
from collections import OrderedDict

import pytest
import torch
from models_kit import VIT, fake_yacs, features, tiny

from mimlens.errors import MimlensError
from mimlens.models import build_model, load_checkpoint, load_model
from mimlens.models.checkpoint import read_checkpoint

CALLS: list[str] = []


def _record_call(*args):
    CALLS.append("unpickling ran code")


class RunsCodeWhenUnpickled:
    def __reduce__(self):
        return _record_call, ("x",)


# ------------------------------------------------------------------------------------------------ safe reading

def test_unsafe_pickle_is_refused_and_runs_nothing(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": tiny(VIT).state_dict(), "extra": RunsCodeWhenUnpickled()}, path)
    CALLS.clear()
    with pytest.raises(MimlensError, match=r"evil\.pth: refused to unpickle.*_record_call"):
        load_model(path, arch="vit-micro-32")
    assert CALLS == []
    torch.load(path, weights_only=False)  # the file really is unsafe: full unpickling runs its code
    assert CALLS == ["unpickling ran code"]


def test_unsafe_object_inside_allowed_namespace_is_refused(tmp_path):
    path = tmp_path / "args.pth"
    torch.save({"model": {}, "args": argparse.Namespace(hook=RunsCodeWhenUnpickled())}, path)
    CALLS.clear()
    with pytest.raises(MimlensError, match="refused to unpickle"):
        read_checkpoint(path)
    assert CALLS == []


def test_namespace_and_yacs_config_are_allowed(tmp_path):
    with fake_yacs() as CfgNode:
        config = CfgNode({"MODEL": CfgNode({"TYPE": "swin", "SWIN": CfgNode({"DEPTHS": [2, 2, 6]})})})
        torch.save({"model": {"w": torch.ones(2)}, "config": config, "args": argparse.Namespace(lr=1e-3)},
                   tmp_path / "ckpt.pth")
    state = read_checkpoint(tmp_path / "ckpt.pth")  # yacs is not importable here: the stand-in is used
    assert state["args"] == argparse.Namespace(lr=1e-3)
    assert isinstance(state["config"], OrderedDict)
    assert state["config"]["MODEL"]["SWIN"]["DEPTHS"] == [2, 2, 6]


def test_unreadable_files(tmp_path):
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MimlensError, match=r"broken\.pth is not a readable torch checkpoint"):
        read_checkpoint(tmp_path / "broken.pth")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00\x01")
    with pytest.raises(MimlensError, match=r"broken\.safetensors is not a readable safetensors file"):
        read_checkpoint(tmp_path / "broken.safetensors")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(MimlensError, match=r"empty\.pth is not a readable torch checkpoint: EOFError"):
        read_checkpoint(tmp_path / "empty.pth")
    with pytest.raises(MimlensError, match=r"missing\.pth does not exist"):
        read_checkpoint(tmp_path / "missing.pth")


# ------------------------------------------------------------------------------------------------- key policy

def test_renamed_key_lists_missing_and_unexpected(tmp_path):
    weights = dict(tiny(VIT).state_dict())
    weights["blocks.0.attn.qkv_weight"] = weights.pop("blocks.0.attn.qkv.weight")
    torch.save(weights, tmp_path / "renamed.pth")
    with pytest.raises(MimlensError) as err:
        load_model(tmp_path / "renamed.pth", arch="vit-micro-32")
    message = str(err.value)
    assert f"{tmp_path / 'renamed.pth'} (format timm) does not fit VisionTransformer" in message
    assert "missing from the checkpoint (1): blocks.0.attn.qkv.weight" in message
    assert "unexpected in the checkpoint (1): blocks.0.attn.qkv_weight" in message


def test_shape_mismatch_and_missing_blocks_are_listed(tmp_path):
    torch.save(tiny(VIT).state_dict(), tmp_path / "vit.pth")
    with pytest.raises(MimlensError, match=r"shape mismatch \(9\): blocks\.0\.mlp\.fc1\.bias \(192,\) vs model "
                                           r"\(96,\), blocks\.0\.mlp\.fc1\.weight \(192, 48\) vs model \(96, 48\)"):
        load_model(tmp_path / "vit.pth", arch="vit-micro-32", mlp_ratio=2.0, depth=3)
    with pytest.raises(MimlensError, match=r"missing from the checkpoint \(12\): blocks\.3\."):
        load_model(tmp_path / "vit.pth", arch="vit-micro-32", depth=4)


def test_failed_load_leaves_the_model_untouched(tmp_path):
    weights = dict(tiny(VIT).state_dict())
    weights.pop("norm.weight")
    torch.save(weights, tmp_path / "partial.pth")
    model = build_model("vit-micro-32")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(MimlensError, match="missing from the checkpoint \\(1\\): norm.weight"):
        load_checkpoint(tmp_path / "partial.pth", model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_head_missing_from_checkpoint_is_allowed_and_reported(tmp_path):
    torch.save({"model": tiny(VIT).state_dict()}, tmp_path / "headless.pth")
    _, info = load_model(tmp_path / "headless.pth", arch="vit-micro-32", num_classes=5)
    assert info["missing_keys"] == ["head.bias", "head.weight"]
    assert info["dropped_head_keys"] == []


@pytest.mark.parametrize("num_classes", [0, 7])
def test_head_that_does_not_fit_is_dropped_and_reported(tmp_path, num_classes):
    torch.save(tiny(VIT, num_classes=5).state_dict(), tmp_path / "with_head.pth")
    _, info = load_model(tmp_path / "with_head.pth", arch="vit-micro-32", num_classes=num_classes)
    assert info["dropped_head_keys"] == ["head.bias", "head.weight"]
    assert info["missing_keys"] == ([] if num_classes == 0 else ["head.bias", "head.weight"])


def test_head_that_fits_is_loaded(tmp_path):
    src = tiny(VIT, num_classes=5)
    torch.save(src.state_dict(), tmp_path / "with_head.pth")
    model, info = load_model(tmp_path / "with_head.pth", arch="vit-micro-32", num_classes=5)
    assert info["missing_keys"] == [] and info["dropped_head_keys"] == []
    torch.testing.assert_close(features(model), features(src))


def test_safetensors_and_wrappers(tmp_path):
    from safetensors.torch import save_file

    src = tiny(VIT)
    save_file(src.state_dict(), tmp_path / "vit.safetensors")
    torch.save({"state_dict": src.state_dict(), "args": argparse.Namespace(model="vit"), "epoch": 1},
               tmp_path / "timm_train.pth.tar")
    for name, wrapper in (("vit.safetensors", None), ("timm_train.pth.tar", "state_dict")):
        model, info = load_model(tmp_path / name, arch="vit-micro-32")
        assert (info["format"], info["wrapper"]) == ("timm", wrapper)
        torch.testing.assert_close(features(model), features(src))


def test_pos_embed_resampled_for_another_image_size(tmp_path):
    src = tiny(VIT)
    torch.save(src.state_dict(), tmp_path / "vit.pth")
    model, info = load_model(tmp_path / "vit.pth", arch="vit-micro-32", img_size=48)
    assert info["resized_keys"] == ["pos_embed"]
    assert model.pos_embed.shape == (1, 1 + 6 * 6, 48)
    torch.testing.assert_close(model.pos_embed[:, 0], src.pos_embed[:, 0])  # the CLS position is kept as is


def test_source_normalisation_recorded_for_known_formats(tmp_path):
    weights = dict(tiny(VIT).state_dict())
    weights.update({"mask_token": torch.zeros(1, 1, 8), "decoder_pred.weight": torch.zeros(4, 8)})
    torch.save({"model": weights}, tmp_path / "mae.pth")
    from mimlens.models import preprocessing

    model = build_model("timm:vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3, embed_dim=48)
    assert preprocessing(model)["mean"] == (0.5, 0.5, 0.5)  # timm's config for this ViT
    load_checkpoint(os.fspath(tmp_path / "mae.pth"), model)
    assert preprocessing(model)["mean"] == pytest.approx((0.485, 0.456, 0.406))  # what MAE was trained with
