"""What ``mimlens analyze`` loads and says about it: timm's pretrained weights from a Hugging Face cache laid out
here (``--pretrained``, offline), MoCo v3's momentum encoder (``--encoder``), a rerun from a run's
``config.yaml`` alone, and one line about unreadable files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
import yaml
from hub_cache import fill_hub_cache
from PIL import Image

from mimlens.analysis.attention import attention_stats
from mimlens.data import build_dataset
from mimlens.models import build_model, load_model

TAG = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"


def mimlens(*argv, env=None):
    """``mimlens ARGV`` in a subprocess: (exit status, stdout, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", **(env or {})}
    done = subprocess.run([sys.executable, "-m", "mimlens", *map(str, argv)], capture_output=True, text=True,
                          timeout=600, env=env)
    return done.returncode, done.stdout, done.stderr


def assert_layers_equal(doc: dict, stats) -> None:
    for layer, distance, entropy in zip(doc["layers"], stats.distance_px, stats.entropy, strict=True):
        assert layer["distance_px"] == pytest.approx(distance.tolist(), rel=1e-5)
        assert layer["entropy"] == pytest.approx(entropy.tolist(), rel=1e-5)


def raw_images(source: str, size: int, count: int) -> torch.Tensor:
    dataset = build_dataset(source, img_size=size)
    return torch.stack([dataset[i]["image"] for i in range(count)])


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """``mimlens analyze timm:TAG --pretrained`` offline, the cache holding random weights of the tag's shapes."""
    root = tmp_path_factory.mktemp("pretrained")
    gen = torch.Generator().manual_seed(4)
    shapes = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000).state_dict()
    weights = {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in shapes.items()}
    fill_hub_cache(root / "hf" / "hub", f"timm/{TAG}", weights)
    env = {"HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(root / "hf" / "hub")}
    out = root / "run"
    status, printed, err = mimlens("analyze", f"timm:{TAG}", "--pretrained", "--num-images", "2", "--batch-size", "2",
                                   "--out", out, "--no-progress", "--device", "cpu", env=env)
    assert status == 0, err
    return out, weights, printed


def test_pretrained_weights_are_analysed_and_recorded(pretrained_run):
    out, weights, printed = pretrained_run
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    model.load_state_dict({k: v for k, v in weights.items() if not k.startswith("head.")})
    doc = json.loads((out / "attention.json").read_text())
    assert_layers_equal(doc, attention_stats(model.eval(), raw_images("synthetic", 224, 2)))
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["pretrained"] is True and cfg["model"]["spec"] == f"timm:{TAG}"
    loading = cfg["resolved"]["loading"]
    assert (loading["mean"], loading["std"]) == ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    assert loading["normalisation"] == "the tag's pretrained_cfg (augreg_in21k_ft_in1k)"
    assert (loading["format"], loading["hub"]) == ("timm-pretrained", f"timm/{TAG}")
    assert loading["dropped_head_keys"] == ["head.weight", "head.bias"] and loading["counts"]["dropped"] == 2
    assert doc["loading"] == loading and doc["weights"] == f"pretrained timm/{TAG}"
    assert f"analyze timm:{TAG} (pretrained timm/{TAG})" in printed
    assert "  head: dropped: the pretrained 1000-class classifier does not fit the headless model" in printed
    assert "  normalisation: mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5): the tag's pretrained_cfg" in printed


def test_the_report_shows_how_the_weights_were_loaded(pretrained_run):
    page = (pretrained_run[0] / "report.html").read_text()
    assert "timm&#x27;s pretrained weights, tag augreg_in21k_ft_in1k" in page
    assert "dropped 2, missing 0, resized 0" in page and "(0.5, 0.5, 0.5), (0.5, 0.5, 0.5)" in page


def test_pretrained_needs_a_timm_tag(cli, tmp_path):
    status, _, err = cli("analyze", "vit-micro-32", "--pretrained", "--out", tmp_path / "run")
    assert status == 2 and "pretrained weights come from timm tags: use timm:NAME[.TAG]" in err


@pytest.fixture(scope="module")
def moco_checkpoint(tmp_path_factory):
    """A MoCo v3 training checkpoint of vit-micro-32: two encoders with different weights, projectors and a
    predictor; returns its path and the momentum encoder."""
    base, momentum = build_model("vit-micro-32", seed=1), build_model("vit-micro-32", seed=2)
    weights = {}
    for name, model in (("base_encoder", base), ("momentum_encoder", momentum)):
        weights.update({f"module.{name}.{k}": v for k, v in model.state_dict().items()})
        weights[f"module.{name}.head.0.weight"] = torch.randn(16, 48)
    weights["module.predictor.0.weight"] = torch.randn(16, 16)
    path = tmp_path_factory.mktemp("moco") / "moco-vit-micro.pth.tar"
    torch.save({"epoch": 300, "arch": "vit_micro", "state_dict": weights}, path)
    return path, momentum


def test_the_momentum_encoder_is_reachable(cli, tmp_path, moco_checkpoint):
    path, momentum = moco_checkpoint
    status, printed, _ = cli("analyze", path, "--arch", "vit-micro-32", "--encoder", "momentum", "--num-images", "4",
                             "--batch-size", "4", "--out", tmp_path / "momentum", "--no-progress")
    assert status == 0
    doc = json.loads((tmp_path / "momentum" / "attention.json").read_text())
    direct, info = load_model(path, "vit-micro-32", moco_encoder="momentum")
    images = raw_images("synthetic:4", 32, 4)
    assert_layers_equal(doc, attention_stats(direct.eval(), images))
    assert_layers_equal(doc, attention_stats(momentum.eval(), images))
    base, _ = load_model(path, "vit-micro-32")
    base_distance = attention_stats(base.eval(), images).distance_px[0].tolist()
    assert doc["layers"][0]["distance_px"] != pytest.approx(base_distance)
    loading = doc["loading"]
    assert (loading["format"], loading["encoder"]) == ("mocov3", "momentum")
    assert loading["dropped_keys"] == info["dropped_keys"] and "module.predictor.0.weight" in loading["dropped_keys"]
    assert loading["counts"]["dropped"] == len(info["dropped_keys"]) > 3
    assert doc["weights"] == f"mocov3 checkpoint {path} (momentum encoder)"
    for line in info["summary"]:
        assert f"  {line}\n" in printed
    assert "momentum encoder" in printed and "(+" in printed  # a few dropped keys named, the rest counted
    cfg = yaml.safe_load((tmp_path / "momentum" / "config.yaml").read_text())
    assert cfg["model"]["encoder"] == "momentum" and cfg["resolved"]["loading"]["dropped_keys"] == info["dropped_keys"]


def test_encoder_momentum_is_only_for_moco(cli, tmp_path):
    status, _, err = cli("analyze", "vit-micro-32", "--encoder", "momentum", "--out", tmp_path / "run")
    assert status == 2 and "encoder 'momentum' is for MoCo v3 checkpoints, and vit-micro-32 is random init" in err


def test_a_run_is_repeated_from_its_config_alone(cli, tmp_path, moco_checkpoint):
    path, _ = moco_checkpoint
    first = tmp_path / "first"
    assert cli("analyze", path, "--arch", "vit-micro-32", "--encoder", "momentum", "--data", "photos:6",
               "--num-images", "6", "--batch-size", "3", "--cka", "--out", first, "--no-progress")[0] == 0
    status, _, err = cli("analyze", "--config", first / "config.yaml", "--out", tmp_path / "again", "--no-progress")
    assert status == 0, err
    again = json.loads((tmp_path / "again" / "attention.json").read_text())
    before = json.loads((first / "attention.json").read_text())
    assert again["layers"] == before["layers"] and again["loading"] == before["loading"]
    assert again["data"] == "photos:6" and (tmp_path / "again" / "cka.json").is_file()
    status, _, err = cli("analyze", "--out", tmp_path / "nothing")
    assert status == 2 and "no MODEL: give it on the command line, or --config a YAML with model.spec" in err


def test_a_truncated_jpeg_is_reported_in_one_line(tmp_path):
    folder = tmp_path / "jpegs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"img{i}.jpg", quality=90)
    data = (folder / "img1.jpg").read_bytes()
    (folder / "img1.jpg").write_bytes(data[: len(data) // 2])
    status, printed, err = mimlens("analyze", "vit-micro-32", "--data", folder, "--num-images", "4",
                                   "--out", tmp_path / "run", "--no-progress", "--device", "cpu")
    assert status == 0, err
    lines = [line for line in (printed + err).splitlines() if "unreadable" in line]
    assert lines == [f"skipped 1 unreadable file(s) in {folder}: img1.jpg (truncated)"]
    assert "on 2 images of" in printed


def test_the_momentum_encoder_of_a_moco_run_comes_from_its_last_checkpoint(cli, tmp_path):
    run = tmp_path / "moco"
    assert cli("pretrain", "moco", "--arch", "vit-micro-32", "--data", "synthetic:16", "--steps", "2",
               "--batch-size", "8", "--out", run, "--no-progress")[0] == 0
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    momentum = {k.removeprefix("momentum_encoder."): v for k, v in state.items() if k.startswith("momentum_encoder.")}
    for spec in (run, run / "checkpoints" / "last.pt"):
        model, info = load_model(spec, moco_encoder="momentum")
        assert info["encoder"] == "momentum"
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in momentum.items() if k in loaded)
        assert not torch.equal(loaded["blocks.0.attn.qkv.weight"], state["encoder.blocks.0.attn.qkv.weight"])
    status, _, err = cli("analyze", run, "--encoder", "momentum", "--num-images", "4", "--batch-size", "4",
                         "--out", tmp_path / "analysis", "--no-progress")
    assert status == 0, err
    doc = json.loads((tmp_path / "analysis" / "attention.json").read_text())
    assert doc["weights"] == f"run {run} at step 2, momentum encoder"
