"""timm's pretrained weights through load_model(..., pretrained=True): read offline from a Hugging Face cache laid
out here, exactly as huggingface_hub stores it; environment variables are read at import, so a subprocess loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
from hub_cache import fill_hub_cache
from safetensors.torch import load_file

from mimlens.errors import MimlensError
from mimlens.models import load_model

TINY = dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=3)
OVERLAY = dict(hf_hub_id="mimlens-test/tiny-vit", num_classes=5, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
SCRIPT = """
import json, sys
from safetensors.torch import save_file
from mimlens.errors import MimlensError
from mimlens.models import load_model, preprocessing

out, kwargs = sys.argv[1], json.loads(sys.argv[2])
results = {}
for num_classes in (5, 0):
    model, info = load_model("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k", pretrained=True,
                             num_classes=num_classes, seed=0, **kwargs)
    save_file(model.state_dict(), f"{out}/loaded-{num_classes}.safetensors")
    results[num_classes] = {"info": info, "preprocessing": preprocessing(model)}
try:
    load_model("timm:vit_tiny_patch16_224.augreg_in21k", pretrained=True, **kwargs | {"pretrained_cfg_overlay": {}})
except MimlensError as err:
    results["error"] = str(err)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, **TINY)
    gen = torch.Generator().manual_seed(3)
    weights = {k: torch.randn(v.shape, generator=gen) for k, v in src.state_dict().items()}
    fill_hub_cache(root / "hf" / "hub", OVERLAY["hf_hub_id"], weights)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HOME=str(root / "hf"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    kwargs = json.dumps({**TINY, "pretrained_cfg_overlay": OVERLAY})
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(root), kwargs], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return root, weights, json.loads(done.stdout.splitlines()[-1])


def test_weights_come_from_the_cache_offline(offline_run):
    root, weights, results = offline_run
    loaded = load_file(root / "loaded-5.safetensors")
    assert set(loaded) == set(weights)
    for key, value in weights.items():
        assert torch.equal(loaded[key], value), key
    info = results["5"]["info"]
    assert (info["format"], info["hub"], info["cache"]) == ("timm-pretrained", "mimlens-test/tiny-vit",
                                                            str(root / "hf" / "hub"))
    assert info["head"] == "loaded: the pretrained 5-class classifier" and info["missing_keys"] == []


def test_preprocessing_follows_the_pretrained_cfg(offline_run):
    _, _, results = offline_run
    assert results["5"]["preprocessing"] == {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "img_size": 32}
    info = results["5"]["info"]
    assert (info["mean"], info["std"]) == ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    assert info["summary"][-1] == ("normalisation: mean (0.1, 0.2, 0.3), std (0.4, 0.5, 0.6): the tag's "
                                   "pretrained_cfg (augreg_in21k_ft_in1k)")


def test_headless_load_drops_the_classifier(offline_run):
    root, weights, results = offline_run
    info = results["0"]["info"]
    assert info["dropped_head_keys"] == ["head.weight", "head.bias"]
    assert info["head"] == "dropped: the pretrained 5-class classifier does not fit the headless model"
    loaded = load_file(root / "loaded-0.safetensors")
    assert set(weights) - set(loaded) == {"head.weight", "head.bias"}
    assert all(torch.equal(loaded[k], weights[k]) for k in loaded)


def test_missing_from_the_cache_offline_is_one_clear_line(offline_run):
    root, _, results = offline_run
    message = results["error"]
    assert message == (
        f"pretrained weights for timm:vit_tiny_patch16_224.augreg_in21k (timm/vit_tiny_patch16_224.augreg_in21k) are "
        f"not in the cache {root / 'hf' / 'hub'} and HF_HUB_OFFLINE=1 forbids downloading them; fill the cache on a "
        "machine with network access and point HF_HOME at it (HF_HUB_OFFLINE=1 then reads only the cache)"
    )


@pytest.mark.parametrize("spec,kwargs,pattern", [
    ("vit-micro-32", {}, r"pretrained weights come from timm tags: use timm:NAME\[\.TAG\]"),
    ("timm:vit_base_patch16_224.nope", {}, r"no pretrained weights named '.*\.nope'; its tags: .*mae"),
    ("timm:vit_base_patch16_224.mae", {"pos_embed": "sincos"}, "would replace the pretrained position embedding"),
    ("timm:vit_base_patch16_224.mae", {"arch": "vit-base-224"}, "arch='vit-base-224' is only for checkpoint files"),
])
def test_pretrained_argument_errors(spec, kwargs, pattern):
    with pytest.raises(MimlensError, match=pattern):
        load_model(spec, pretrained=True, **kwargs)
