"""``mimlens analyze`` end to end: the run directory contract, and the numbers equal a direct library call."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mimlens.analysis.attention import attention_stats
from mimlens.analysis.cka import cka_matrix
from mimlens.data import build_dataset
from mimlens.models import load_model

ATTENTION_KEYS = {"model", "num_images", "image_size", "prefix_policy", "dtype", "layers", "weights", "data"}
LAYER_KEYS = {"name", "stage", "grid", "stride_px", "window", "num_keys", "distance_px", "distance_frac", "entropy",
              "entropy_norm", "head_kl", "head_kl_mean", "uniform"}
CKA_KEYS = {"estimator", "unit", "num_images", "layers_a", "layers_b", "matrix"}


def raw_images(folder, size):
    """Every readable image of ``folder`` once (an unreadable file is left out, not replaced)."""
    dataset = build_dataset(folder, img_size=size)
    return torch.stack([dataset[i]["image"] for i in dataset.first_readable(len(dataset))])


def test_analyze_writes_the_run_directory_contract(analysis_run, image_folder, checkpoint):
    out = analysis_run.path
    for name in ("config.yaml", "attention.json", "attention.csv", "cka.json", "report.html",
                 "figures/attention_distance.png", "figures/attention_entropy.png", "figures/head_kl.png",
                 "figures/cka_within.png"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "attention.json").read_text())
    assert ATTENTION_KEYS <= set(doc)
    assert doc["num_images"] == 5 and doc["image_size"] == [32, 32] and doc["prefix_policy"] == "renorm"
    assert doc["weights"] != "random init" and str(checkpoint) in doc["weights"]
    assert doc["model"] == str(checkpoint) and doc["architecture"] == "vit_tiny_patch16_224"
    assert [Path(p).name for p in doc["skipped_files"]] == ["broken.png"]
    assert [layer["name"] for layer in doc["layers"]] == ["blocks.0", "blocks.1", "blocks.2"]
    for layer in doc["layers"]:
        assert LAYER_KEYS <= set(layer)
        assert len(layer["distance_px"]) == len(layer["entropy"]) == 3
        assert [layer["head_kl"][h][h] for h in range(3)] == [0.0, 0.0, 0.0]
    cka = json.loads((out / "cka.json").read_text())
    assert CKA_KEYS <= set(cka) and cka["num_images"] == 5 and cka["unit"] == "image"
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"] == {"spec": str(checkpoint), "arch": "vit-micro-32", "seed": 0, "pretrained": False,
                            "encoder": "base"}
    assert cfg["resolved"]["loading"] == doc["loading"]
    assert (doc["loading"]["format"], doc["loading"]["counts"]) == ("timm", {"dropped": 0, "missing": 0, "resized": 0})
    assert cfg["data"]["source"] == str(image_folder) and cfg["analysis"]["cka"] is True
    with open(out / "attention.csv") as f:
        rows = list(csv.DictReader(f))
    distance = [float(r["value"]) for r in rows if r["layer"] == "blocks.1" and r["metric"] == "distance_px"]
    assert distance == pytest.approx(doc["layers"][1]["distance_px"], rel=1e-12)


def test_analyze_reports_the_skipped_file_and_a_per_layer_table(analysis_run, image_folder):
    printed = analysis_run.stdout
    assert printed.count("unreadable") == 1
    assert f"skipped 1 unreadable file(s) in {image_folder}: broken.png (not an image)" in printed
    assert "on 5 images of" in printed and "random init" not in printed
    doc = json.loads((analysis_run.path / "attention.json").read_text())
    row = next(line.split() for line in printed.splitlines() if line.startswith("blocks.2"))
    layer = doc["layers"][2]
    expected = [sum(layer["distance_px"]) / 3, layer["uniform"]["distance_px"], sum(layer["entropy"]) / 3,
                layer["uniform"]["entropy"], layer["head_kl_mean"]]
    assert [float(v) for v in row[1:]] == pytest.approx(expected, rel=1e-3)
    assert f"run directory: {analysis_run.path}" in printed


def test_analyze_numbers_equal_the_library_on_the_same_images(analysis_run, image_folder, checkpoint):
    """Streaming in batches of two, the corrupt file skipped: same numbers as one direct call of each library
    function on the five readable raw images."""
    model, _ = load_model(checkpoint, "vit-micro-32")
    images = raw_images(image_folder, 32)
    assert len(images) == 5
    stats = attention_stats(model.eval(), images)
    doc = json.loads((analysis_run.path / "attention.json").read_text())
    for i, layer in enumerate(doc["layers"]):
        assert layer["distance_px"] == pytest.approx(stats.distance_px[i].tolist(), rel=1e-5)
        assert layer["entropy"] == pytest.approx(stats.entropy[i].tolist(), rel=1e-5)
        assert layer["head_kl_mean"] == pytest.approx(stats.head_kl_mean[i], rel=1e-4)
    expected = cka_matrix(model, images, batch_size=4).matrix
    cka = json.loads((analysis_run.path / "cka.json").read_text())
    assert torch.tensor(cka["matrix"], dtype=torch.float64) == pytest.approx(expected, abs=1e-6)


def test_uniform_reference_is_the_mean_pairwise_token_distance(analysis_run):
    """vit-micro-32: a 4 x 4 grid of 8 px tokens; uniform attention over patch keys (renorm) gives the mean
    distance between token centres over all ordered pairs, self-pairs included (brute force)."""
    centres = [(8 * (r + 0.5), 8 * (c + 0.5)) for r in range(4) for c in range(4)]
    mean = sum(math.dist(p, q) for p in centres for q in centres) / len(centres) ** 2
    doc = json.loads((analysis_run.path / "attention.json").read_text())
    assert doc["layers"][0]["uniform"]["distance_px"] == pytest.approx(mean, rel=1e-6)
    assert doc["layers"][0]["uniform"]["entropy"] == pytest.approx(math.log(16), rel=1e-6)


def test_random_init_is_said_plainly(workdir, cli):
    out = workdir / "random"
    status, printed, _ = cli("analyze", "vit-micro-32", "--num-images", "4", "--batch-size", "4",
                             "--prefix-policy", "keep", "--out", out, "--no-progress")
    assert status == 0
    doc = json.loads((out / "attention.json").read_text())
    assert doc["weights"] == "random init" and doc["prefix_policy"] == "keep" and doc["data"] == "synthetic"
    assert "(random init)" in printed and "note: the weights are a random initialisation" in printed
    assert not (out / "cka.json").exists() and not (out / "figures" / "cka_within.png").exists()
    assert "random initialisation" in (out / "report.html").read_text()


@pytest.mark.slow
def test_analyze_under_torchrun_equals_one_process(analysis_run, image_folder, checkpoint, workdir):
    """Two gloo processes, each its share of the images and batches: the files rank 0 writes hold the numbers
    of the one-process run."""
    out = workdir / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mimlens",
         "analyze", str(checkpoint), "--arch", "vit-micro-32", "--data", str(image_folder), "--num-images", "10",
         "--batch-size", "2", "--cka", "--out", str(out), "--no-progress", "--device", "cpu"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run directory:") == 1  # rank 0 alone prints and writes
    one = json.loads((analysis_run.path / "attention.json").read_text())
    two = json.loads((out / "attention.json").read_text())
    assert two["num_images"] == one["num_images"] == 5
    for a, b in zip(one["layers"], two["layers"], strict=True):
        assert b["distance_px"] == pytest.approx(a["distance_px"], rel=1e-6)
        assert b["entropy"] == pytest.approx(a["entropy"], rel=1e-6)
        torch.testing.assert_close(torch.tensor(b["head_kl"]), torch.tensor(a["head_kl"]), rtol=1e-4, atol=1e-8)
    cka_one = json.loads((analysis_run.path / "cka.json").read_text())
    cka_two = json.loads((out / "cka.json").read_text())
    assert torch.tensor(cka_two["matrix"]) == pytest.approx(torch.tensor(cka_one["matrix"]), abs=1e-6)


def test_split_and_scene_difficulty_choose_the_images(workdir, cli, checkpoint):
    """``data.split`` and ``data.synthetic`` reach the scenes: the numbers equal the library's on exactly
    those images, and those images are not the default training-split scenes."""
    from mimlens.data import SyntheticScenes

    config = workdir / "val_scenes.yaml"
    config.write_text("data: {split: val, synthetic: {num_objects: [1, 1], background_strength: 0.25}}\n")
    out = workdir / "val_scenes"
    status, _, _ = cli("analyze", checkpoint, "--arch", "vit-micro-32", "--config", config, "--num-images", "4",
                       "--batch-size", "4", "--out", out, "--no-progress")
    assert status == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["split"] == "val"
    model, _ = load_model(checkpoint, "vit-micro-32")
    scenes = SyntheticScenes(4, 32, 0, split="val", num_objects=(1, 1), background_strength=0.25)
    images = torch.stack([scenes[i]["image"] for i in range(4)])
    expected = attention_stats(model.eval(), images)
    doc = json.loads((out / "attention.json").read_text())
    for layer, values in zip(doc["layers"], expected.distance_px, strict=True):
        assert layer["distance_px"] == pytest.approx(values.tolist(), rel=1e-5)
    default = build_dataset("synthetic:4", img_size=32)
    assert not torch.equal(images, torch.stack([default[i]["image"] for i in range(4)]))


def test_a_seeded_random_init_gives_the_same_numbers_twice(workdir, cli):
    docs = []
    for name, seed in (("seed7_a", "7"), ("seed7_b", "7"), ("seed8", "8")):
        status, _, _ = cli("analyze", "vit-micro-32", "--seed", seed, "--num-images", "4", "--batch-size", "4",
                           "--out", workdir / name, "--no-progress")
        assert status == 0
        docs.append(json.loads((workdir / name / "attention.json").read_text()))
    assert docs[0]["seed"] == 7
    assert yaml.safe_load((workdir / "seed7_a" / "config.yaml").read_text())["model"]["seed"] == 7
    assert docs[0]["layers"] == docs[1]["layers"]
    assert docs[2]["layers"][0]["head_kl"] != docs[0]["layers"][0]["head_kl"]


def assert_same_layers(a: dict, b: dict) -> None:
    for x, y in zip(a["layers"], b["layers"], strict=True):
        assert x["distance_px"] == pytest.approx(y["distance_px"], rel=1e-6)
        assert x["entropy"] == pytest.approx(y["entropy"], rel=1e-6)


def test_a_training_checkpoint_is_analysed_at_its_step_without_arch(demo_dir, workdir, cli):
    """``RUN/checkpoints/last.pt`` names its model in its own config; its encoder at the last step is the backbone
    the finished run exported."""
    run = demo_dir / "pretrain_simmim"
    status, printed, _ = cli("analyze", run / "checkpoints" / "last.pt", "--num-images", "4", "--batch-size", "4",
                             "--out", workdir / "from_last", "--no-progress")
    assert status == 0
    doc = json.loads((workdir / "from_last" / "attention.json").read_text())
    assert doc["step"] == 2 and "at step 2" in printed
    assert cli("analyze", run, "--num-images", "4", "--batch-size", "4", "--out", workdir / "from_run",
               "--no-progress")[0] == 0
    finished = json.loads((workdir / "from_run" / "attention.json").read_text())
    assert finished["step"] == 2 and "training has not finished" not in finished["weights"]
    assert_same_layers(doc, finished)
    assert cli("analyze", run / "checkpoints" / "last.pt", "--arch", "vit-micro-32", "--num-images", "4",
               "--out", workdir / "from_last_arch", "--no-progress")[0] == 0
    status, _, err = cli("analyze", run / "checkpoints" / "last.pt", "--arch", "vit-tiny-64", "--out",
                         workdir / "bad_arch")
    assert status == 2 and "training checkpoint of 'vit-micro-32'" in err


def test_an_unfinished_run_is_analysed_at_its_latest_checkpoint(demo_dir, workdir, cli):
    import shutil

    unfinished = workdir / "unfinished_run"
    shutil.copytree(demo_dir / "pretrain_simmim", unfinished)
    (unfinished / "backbone.safetensors").unlink()
    status, printed, _ = cli("analyze", unfinished, "--num-images", "4", "--batch-size", "4",
                             "--out", workdir / "from_unfinished", "--no-progress")
    assert status == 0
    doc = json.loads((workdir / "from_unfinished" / "attention.json").read_text())
    assert doc["step"] == 2 and "at step 2 (last.pt; training has not finished)" in printed
    assert cli("analyze", demo_dir / "pretrain_simmim", "--num-images", "4", "--batch-size", "4",
               "--out", workdir / "from_finished", "--no-progress")[0] == 0
    assert_same_layers(doc, json.loads((workdir / "from_finished" / "attention.json").read_text()))
    (unfinished / "checkpoints" / "last.pt").unlink()
    status, _, err = cli("analyze", unfinished, "--out", workdir / "bad_unfinished")
    assert status == 2 and "has no backbone.safetensors (written when training finishes) and no checkpoint" in err


def test_cka_axes_name_the_model_as_given_not_its_timm_class(workdir, cli, monkeypatch):
    from mimlens.report import figures_cka

    drawn, save = [], figures_cka.save_png
    monkeypatch.setattr(figures_cka, "save_png", lambda figure, path: drawn.append(figure) or save(figure, path))
    status, _, _ = cli("analyze", "vit-micro-32", "--cka", "--num-images", "4", "--batch-size", "4",
                       "--out", workdir / "cka_label", "--no-progress")
    assert status == 0
    assert json.loads((workdir / "cka_label" / "cka.json").read_text())["model_a"] == "vit-micro-32"
    (figure,) = drawn
    assert figure.axes[0].get_xlabel() == figure.axes[0].get_ylabel() == "layer of vit-micro-32"
