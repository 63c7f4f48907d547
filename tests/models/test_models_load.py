"""load_model for every MODEL spelling, run directories, save_backbone and model_section."""

from __future__ import annotations

import pytest
import torch
import yaml
from models_kit import SWIN, VIT, features, tiny
from safetensors.torch import load_file

from mimlens.config import save_config
from mimlens.errors import MimlensError
from mimlens.models import build_model, load_model, model_section, save_backbone


def write_run(run, name, kwargs, model, **save):
    save_config({"model": model_section(name, kwargs), "optim": {"lr": 1e-3}}, run)
    save_backbone(model, run / "backbone.safetensors", **save)


def test_random_init_spellings():
    model, info = load_model("vit-micro-32", num_classes=2)
    assert info == {"source": "vit-micro-32", "format": "init"} and model.head.out_features == 2
    model, info = load_model("timm:vit_tiny_patch16_224", img_size=32, depth=1)
    assert info["format"] == "init" and len(model.blocks) == 1


def test_run_directory_round_trip(tmp_path):
    src = tiny(VIT, pos_embed="sincos")
    write_run(tmp_path, "vit-micro-32", {"pos_embed": "sincos"}, src)
    model, info = load_model(tmp_path)
    torch.testing.assert_close(features(model), features(src))
    assert not model.pos_embed.requires_grad
    assert info["source"] == str(tmp_path) and info["format"] == "timm"
    assert info["run"] == {"name": "vit-micro-32", "kwargs": {"pos_embed": "sincos"}}


def test_run_directory_with_overrides_for_fine_tuning(tmp_path):
    src = tiny(SWIN)
    arch, kwargs = SWIN
    write_run(tmp_path, arch, kwargs, src)
    model, info = load_model(tmp_path, num_classes=3)
    assert info["missing_keys"] == ["head.fc.bias", "head.fc.weight"]
    with torch.no_grad():
        x = torch.randn(1, 3, 32, 32)
        torch.testing.assert_close(model.eval().forward_features(x), src.forward_features(x))


def test_save_backbone_drops_the_head_unless_asked(tmp_path):
    model = tiny(VIT, num_classes=4)
    keys = set(load_file(save_backbone(model, tmp_path / "a.safetensors")))
    assert keys == set(model.state_dict()) - {"head.weight", "head.bias"}
    assert set(load_file(save_backbone(model, tmp_path / "b.safetensors", head=True))) == set(model.state_dict())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


@pytest.mark.parametrize("setup,pattern", [
    (lambda run: None, r"has no config\.yaml"),
    (lambda run: save_config({"optim": {}}, run), r"config\.yaml: expected a 'model' section with a 'name'"),
    (lambda run: save_config({"model": {"name": "vit-micro-32", "kwargs": [1]}}, run), r"kwargs must be a mapping"),
    (lambda run: save_config({"model": model_section("vit-micro-32")}, run), r"has no backbone\.safetensors"),
])
def test_run_directory_errors(tmp_path, setup, pattern):
    setup(tmp_path)
    with pytest.raises(MimlensError, match=pattern):
        load_model(tmp_path)


def test_spelling_errors(tmp_path):
    torch.save(tiny(VIT).state_dict(), tmp_path / "vit.pth")
    with pytest.raises(MimlensError, match=r"vit\.pth needs an arch"):
        load_model(tmp_path / "vit.pth")
    with pytest.raises(MimlensError, match="arch='vit-micro-32' is only for checkpoint files"):
        load_model("vit-micro-32", arch="vit-micro-32")
    with pytest.raises(MimlensError, match=r"'.*nothere\.pth': no such file or directory"):
        load_model(tmp_path / "nothere.pth", arch="vit-micro-32")
    with pytest.raises(MimlensError, match="close presets: vit-micro-32"):
        load_model("vit-micro-23")


def test_arch_as_bare_timm_name(tmp_path):
    src = tiny(VIT)
    torch.save(src.state_dict(), tmp_path / "vit.pth")
    model, info = load_model(tmp_path / "vit.pth", arch="vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3,
                             embed_dim=48)
    assert info["arch"] == "vit_tiny_patch16_224"
    torch.testing.assert_close(features(model), features(src))


def test_model_section_is_plain_yaml_and_rebuilds(tmp_path):
    section = model_section("timm:swin_tiny_patch4_window7_224", {"depths": (1, 1), "num_heads": (2, 4),
                                                                  "embed_dim": 16, "img_size": 32})
    assert section == {"name": "timm:swin_tiny_patch4_window7_224",
                       "kwargs": {"depths": [1, 1], "num_heads": [2, 4], "embed_dim": 16, "img_size": 32}}
    reread = yaml.safe_load(yaml.safe_dump(section))
    model = build_model(reread["name"], **reread["kwargs"])
    assert [len(s.blocks) for s in model.layers] == [1, 1]
    with pytest.raises(MimlensError, match="plain YAML values"):
        model_section("vit-micro-32", {"act_layer": torch.nn.GELU})
    with pytest.raises(MimlensError, match="unknown model 'vit-mini'"):
        model_section("vit-mini")
