"""Reading checkpoints safely and the exact key-set policy of load_checkpoint."""

from __future__ import annotations

import argparse
import io
import os
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import yaml
from models_kit import VIT, fake_yacs, features, tiny

from mimlens.errors import MimlensError
from mimlens.models import build_model, load_checkpoint, load_model
from mimlens.models.weights import read_checkpoint

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
    with pytest.raises(MimlensError, match=r"evil\.pth: refused to unpickle test_models_checkpoint\._record_call: "
                                           "mimlens never runs code") as err:
        load_model(path, arch="vit-micro-32")
    assert CALLS == []
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)  # mimlens's words, not torch's advice
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


def test_system_call_in_a_pickle_is_refused_by_name(tmp_path):
    path = tmp_path / "system.pth"
    path.write_bytes(b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")  # os.system("true")
    with pytest.raises(MimlensError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: refused to unpickle ") and "system" in message
    assert "weights_only" not in message and "torch.serialization" not in message and "\n" not in message


def test_unreadable_files(tmp_path):
    cases = {
        "broken.pth": (b"not a checkpoint", "neither a torch.save archive nor a pickle (16 bytes, starting b'not a"),
        "random.pth": (bytes(range(149, 256)), "neither a torch.save archive nor a pickle (107 bytes"),
        "badpickle.pth": (b"\x80\x02\x95\xff\xff", "a damaged or truncated pickle (5 bytes)"),
        "empty.pth": (b"", "the file is empty"),
        "broken.safetensors": (b"\x00\x01", "its header is damaged or the file is truncated (2 bytes)"),
    }
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buffer)
    cases["truncated.pth"] = (buffer.getvalue()[:300], "a damaged or truncated torch.save archive (300 bytes)")
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(MimlensError) as err:
            read_checkpoint(tmp_path / name)
        kind = "safetensors file" if name.endswith(".safetensors") else "torch checkpoint"
        assert str(err.value).startswith(f"{tmp_path / name} is not a readable {kind}: {reason}")
        assert "\n" not in str(err.value) and "operand" not in str(err.value) and "weights_only" not in str(err.value)
    with pytest.raises(MimlensError, match=r"missing\.pth does not exist"):
        read_checkpoint(tmp_path / "missing.pth")


# ------------------------------------------------------------------------------------------------- key policy

def _listing(message: str) -> str:
    """The text of the key listing a mismatch error points to."""
    return Path(re.search(r"all keys in (\S+\.txt);", message).group(1)).read_text()


def test_renamed_key_lists_missing_and_unexpected(tmp_path):
    weights = dict(tiny(VIT).state_dict())
    weights["blocks.0.attn.qkv_weight"] = weights.pop("blocks.0.attn.qkv.weight")
    torch.save(weights, tmp_path / "renamed.pth")
    with pytest.raises(MimlensError) as err:
        load_model(tmp_path / "renamed.pth", arch="vit-micro-32")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'renamed.pth'} (format timm) does not fit the arch's VisionTransformer: "
                              "1 model keys missing from the checkpoint (blocks.0.attn.qkv.weight); "
                              "1 checkpoint keys the model lacks (blocks.0.attn.qkv_weight); all keys in ")
    assert message.endswith("no preset fits it: check the arch and its kwargs") and "\n" not in message


def test_shape_mismatch_and_missing_blocks_are_counted_with_all_keys_in_a_file(tmp_path):
    torch.save(tiny(VIT).state_dict(), tmp_path / "vit.pth")
    with pytest.raises(MimlensError, match=r"9 shapes differ \(blocks\.0\.mlp\.fc1\.bias \(192,\) vs model "
                                           r"\(96,\), blocks\.0\.mlp\.fc1\.weight \(192, 48\) vs model \(96, 48\), .*"
                                           r"\(\+6 more\)\).*it fits the preset vit-micro-32"):
        load_model(tmp_path / "vit.pth", arch="vit-micro-32", mlp_ratio=2.0, depth=3)
    with pytest.raises(MimlensError, match=r"12 model keys missing from the checkpoint \(blocks\.3\.") as err:
        load_model(tmp_path / "vit.pth", arch="vit-micro-32", depth=4)
    listing = _listing(str(err.value))
    assert listing.startswith("# 12 model keys missing from the checkpoint\nblocks.3.")
    assert len([k for k in listing.splitlines() if k.startswith("blocks.3.")]) == 12


def test_backbone_of_a_run_with_another_preset_names_the_preset_that_fits(tmp_path):
    from mimlens.models import model_section, save_backbone
    from mimlens.models.load import BACKBONE_FILE

    run = tmp_path / "run"
    save_backbone(build_model("vit-tiny-64"), run / BACKBONE_FILE)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": model_section("vit-tiny-64")}))
    with pytest.raises(MimlensError) as err:
        load_model(run / BACKBONE_FILE, arch="vit-micro-32")
    message = str(err.value)
    counts = re.findall(r"(\d+) (model keys missing|checkpoint keys the model lacks|shapes differ)", message)
    # depth 6 vs 3, width 192 vs 48
    assert counts == [("36", "checkpoint keys the model lacks"), ("42", "shapes differ")]
    assert message.endswith(f"it fits the preset vit-tiny-64: pass that as the arch (or load the run directory {run} "
                            "itself)")
    assert len(_listing(message).splitlines()) == 2 + 36 + 42
    load_model(run / BACKBONE_FILE, arch="vit-tiny-64")  # the suggestion works


def test_foreign_format_into_another_family_names_the_preset_that_fits(tmp_path):
    weights = dict(tiny(VIT).state_dict())
    weights["decoder_embed.weight"] = torch.zeros(4, 48)
    torch.save({"model": weights}, tmp_path / "mae.pth")
    with pytest.raises(MimlensError, match=r"mae\.pth holds a checkpoint of format mae .*converts into a timm "
                                           r"VisionTransformer .*but the arch builds a SwinTransformer; it fits the "
                                           r"preset vit-micro-32: pass that as the arch$"):
        load_model(tmp_path / "mae.pth", arch="swin-tiny-64")


def test_failed_load_leaves_the_model_untouched(tmp_path):
    weights = dict(tiny(VIT).state_dict())
    weights.pop("norm.weight")
    torch.save(weights, tmp_path / "partial.pth")
    model = build_model("vit-micro-32")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(MimlensError, match=r"1 model keys missing from the checkpoint \(norm\.weight\)"):
        load_checkpoint(tmp_path / "partial.pth", model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_head_missing_from_checkpoint_is_allowed_and_reported(tmp_path):
    torch.save({"model": tiny(VIT).state_dict()}, tmp_path / "headless.pth")
    _, info = load_model(tmp_path / "headless.pth", arch="vit-micro-32", num_classes=5)
    assert info["missing_keys"] == ["head.bias", "head.weight"]
    assert info["dropped_head_keys"] == []
    assert info["head"] == "the model's 5-class classifier is left as initialised: the checkpoint has none"
    assert "missing 2 key(s) (left as initialised): head.bias, head.weight" in info["summary"]


@pytest.mark.parametrize("num_classes", [0, 7])
def test_head_that_does_not_fit_is_dropped_and_reported(tmp_path, num_classes):
    torch.save(tiny(VIT, num_classes=5).state_dict(), tmp_path / "with_head.pth")
    _, info = load_model(tmp_path / "with_head.pth", arch="vit-micro-32", num_classes=num_classes)
    assert info["dropped_head_keys"] == ["head.bias", "head.weight"]
    assert info["missing_keys"] == ([] if num_classes == 0 else ["head.bias", "head.weight"])
    target = "the headless model" if num_classes == 0 else "the model's 7 classes"
    assert info["head"] == f"dropped: the checkpoint's 5-class classifier does not fit {target}"
    assert "dropped 2 key(s) (not used by the model): head.bias, head.weight" in info["summary"]


def test_head_that_fits_is_loaded(tmp_path):
    src = tiny(VIT, num_classes=5)
    torch.save(src.state_dict(), tmp_path / "with_head.pth")
    model, info = load_model(tmp_path / "with_head.pth", arch="vit-micro-32", num_classes=5)
    assert info["missing_keys"] == [] and info["dropped_head_keys"] == []
    assert info["head"] == "loaded: the checkpoint's 5-class classifier"
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


TIMM_VIT = ("timm:vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=3, embed_dim=48))  # timm's mean: 0.5
IMAGENET = (pytest.approx((0.485, 0.456, 0.406)), pytest.approx((0.229, 0.224, 0.225)))


@pytest.mark.parametrize("name,state,expected,why", [
    ("deit_release.pth", lambda w: {"model": w}, IMAGENET, "the DeiT, MAE and MoCo v3 release layout"),
    ("beit.pth", lambda w: {"model": w, "args": argparse.Namespace(imagenet_default_mean_and_std=False)},
     ((0.5,) * 3, (0.5,) * 3), "imagenet_default_mean_and_std=False"),
    ("bare.pth", lambda w: w, ((0.5,) * 3, (0.5,) * 3), "the arch's own"),
    ("timm_train.pth.tar", lambda w: {"state_dict": w}, ((0.5,) * 3, (0.5,) * 3), "the arch's own"),
], ids=["release", "beit-args", "bare", "timm-training"])
def test_normalisation_follows_the_checkpoint_origin(tmp_path, name, state, expected, why):
    from mimlens.models import preprocessing

    torch.save(state(tiny(VIT).state_dict()), tmp_path / name)
    arch, overrides = TIMM_VIT
    model, info = load_model(tmp_path / name, arch=arch, **overrides)
    assert (info["mean"], info["std"]) == expected
    assert (preprocessing(model)["mean"], preprocessing(model)["std"]) == expected
    assert why in info["normalisation"] and why in info["summary"][-1]


def test_summary_names_format_and_counts(tmp_path):
    weights = dict(tiny(VIT).state_dict())
    weights.update({"mask_token": torch.zeros(1, 1, 48), **{f"decoder_blocks.{i}.w": torch.zeros(2) for i in range(4)}})
    torch.save({"model": weights}, tmp_path / "mae.pth")
    _, info = load_model(tmp_path / "mae.pth", arch="vit-micro-32", img_size=48)
    assert info["summary"] == [
        f"loaded {tmp_path / 'mae.pth'}: format mae (MAE pre-training checkpoint (encoder + decoder)), "
        "weights under 'model'",
        "dropped 5 key(s) (not used by the model): decoder_blocks.0.w, decoder_blocks.1.w, decoder_blocks.2.w, "
        "… (+2 more)",
        "missing: none",
        "resized 1 key(s) (interpolated to the model's size): pos_embed",
        "head: none: neither the checkpoint nor the model has a classifier",
        "normalisation: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225): official MAE pre-training checkpoint "
        "(encoder + decoder)",
    ]
    assert len(info["dropped_keys"]) == 5 and info["resized_keys"] == ["pos_embed"]


def test_momentum_encoder_only_for_moco(tmp_path):
    torch.save(tiny(VIT).state_dict(), tmp_path / "vit.pth")
    with pytest.raises(MimlensError, match=r"moco_encoder='momentum' is for MoCo v3 checkpoints; .*vit\.pth is "
                                           r"format timm"):
        load_model(tmp_path / "vit.pth", arch="vit-micro-32", moco_encoder="momentum")
