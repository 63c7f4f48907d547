"""Config resolution (defaults ← YAML ← flags) and the shipped recipes."""

from pathlib import Path

import pytest
import yaml

from mimlens.engine.optim import scaled_lr
from mimlens.errors import MimlensError
from mimlens.pretrain.run import resolve_config
from mimlens.pretrain.simmim import scaled_mask_patch

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_every_recipe_resolves_and_states_its_length_once():
    assert len(CONFIGS) >= 7
    for path in CONFIGS:
        cfg = resolve_config(path, {})
        assert cfg["objective"] == path.name.split("_")[0], path.name
        assert (cfg["train"]["steps"] is None) != (cfg["train"]["epochs"] is None), path.name
        assert (cfg["optim"]["warmup_steps"] is None) != (cfg["optim"]["warmup_epochs"] is None), path.name


@pytest.mark.parametrize(("name", "lr"), [("simmim_vit-tiny_synthetic64.yaml", 5e-4),
                                          ("simmim_vit-base_in1k.yaml", 4e-4), ("simmim_swin-base_in1k.yaml", 8e-4),
                                          ("supervised_vit-base_in1k.yaml", 1e-3), ("moco_vit-base_in1k.yaml", 2.4e-3)])
def test_recipes_give_the_published_learning_rates(name, lr):
    cfg = resolve_config(Path(CONFIGS[0].parent, name), {})
    assert scaled_lr(cfg["optim"]["base_lr"], cfg["optim"]["batch_size"]) == pytest.approx(lr)


def test_flags_override_the_yaml_and_steps_replace_epochs(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "swin-tiny-64", "kwargs": {"window_size": 2}},
                                    "optim": {"batch_size": 64, "warmup_epochs": 1}, "train": {"epochs": 3}}))
    cfg = resolve_config(path, {"optim.batch_size": 16, "train.steps": 7, "model.kwargs.pos_embed": None})
    assert cfg["optim"]["batch_size"] == 16
    assert cfg["train"]["steps"] == 7 and cfg["train"]["epochs"] is None
    assert cfg["optim"]["warmup_epochs"] == 1 and cfg["optim"]["warmup_steps"] is None
    assert cfg["model"] == {"name": "swin-tiny-64", "kwargs": {"window_size": 2}}  # None kwargs are dropped


def test_unknown_keys_name_the_file_and_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  learning_rate: 1.0\n")
    with pytest.raises(MimlensError, match=r"bad.yaml.optim: unknown key 'learning_rate'"):
        resolve_config(path, {})
    with pytest.raises(MimlensError, match="objective must be one of"):
        resolve_config(None, {"objective": "mae"})


def test_mask_patch_scales_with_the_image():
    assert scaled_mask_patch(224, 16) == 32
    assert scaled_mask_patch(192, 4) == 24  # 27.4 px → the nearest size dividing 192 (recipes may set 32)
    assert scaled_mask_patch(64, 8) == 8
    assert scaled_mask_patch(64, 4) == 8
