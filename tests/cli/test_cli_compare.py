"""``mimlens compare``: a reused analysis run against a model analysed on the spot, and CKA across them."""

import json

import pytest
import torch

from mimlens.analysis.cka import cka_matrix
from mimlens.data import build_dataset
from mimlens.models import load_model

CKA_KEYS = {"estimator", "unit", "num_images", "layers_a", "layers_b", "matrix"}


def test_compare_writes_its_files(compare_run, analysis_run, image_folder):
    out = compare_run.path
    for name in ("config.yaml", "compare.json", "cka_across.json", "report.html", "figures/attention_distance.png",
                 "figures/attention_entropy.png", "figures/head_kl.png", "figures/cka_across.png"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "compare.json").read_text())
    labels = [m["label"] for m in meta["models"]]
    assert labels == ["analysis", "swin-tiny-64"]
    first, second = meta["models"]
    assert first["attention_from"].startswith(f"analysis run {analysis_run.path} (5 images")
    assert second["attention_from"].startswith("this comparison (4 images") and second["weights"] == "random init"
    reused = json.loads((out / first["attention"]).read_text())
    assert reused == json.loads((analysis_run.path / "attention.json").read_text())
    swin = json.loads((out / second["attention"]).read_text())
    assert swin["num_images"] == 4 and swin["image_size"] == [64, 64]
    assert [layer["stage"] for layer in swin["layers"]] == [0, 0, 1, 1, 2, 2, 2, 2, 2, 2]
    assert "analysis vs swin-tiny-64: mean diagonal" in compare_run.stdout
    assert [p.rsplit("/", 1)[-1] for p in meta["skipped_files"]] == ["broken.png"]
    assert compare_run.stdout.count("unreadable") == 1
    assert f"skipped 1 unreadable file(s) in {image_folder}: broken.png (not an image)" in compare_run.stdout
    assert first["loading"] == reused["loading"] and second["loading"]["format"] == "init"
    assert "analysis (timm checkpoint" in compare_run.stdout and "\n  loaded " in compare_run.stdout


def test_cka_across_uses_the_same_raw_images_and_each_models_preprocessing(compare_run, image_folder, checkpoint):
    """Raw images at the larger model's side (64 px); the 32 px ViT sees them resized, the Swin as they are."""
    pairs = json.loads((compare_run.path / "cka_across.json").read_text())["pairs"]
    assert len(pairs) == 1 and CKA_KEYS <= set(pairs[0])
    pair = pairs[0]
    assert (pair["model_a"], pair["model_b"], pair["num_images"]) == ("analysis", "swin-tiny-64", 4)
    vit, _ = load_model(checkpoint, "vit-micro-32")
    swin, _ = load_model("swin-tiny-64", seed=0)  # compare's default seed for the models it initialises
    dataset = build_dataset(image_folder, img_size=64)
    raw = torch.stack([dataset[i]["image"] for i in dataset.first_readable(4)])  # broken.png left out
    expected = cka_matrix(vit.eval(), raw, swin.eval(), batch_size=4)
    assert pair["layers_a"] == expected.layers_a and pair["layers_b"] == expected.layers_b
    assert torch.tensor(pair["matrix"], dtype=torch.float64) == pytest.approx(expected.matrix, abs=1e-6)


def test_compare_arch_rules(cli, workdir, checkpoint):
    status, _, err = cli("compare", checkpoint, "vit-micro-32", "--arch", "a", "--arch", "b", "--arch", "c",
                         "--out", workdir / "bad")
    assert status == 2 and "--arch given 3 times for 2 items" in err
    status, _, err = cli("compare", "vit-micro-32", "--out", workdir / "bad")
    assert status == 2 and "compare needs at least two runs or models, got 1" in err


def test_compare_of_a_random_init_analysis_with_itself_gives_cka_one(cli, workdir):
    """The analysis records its seed, and compare rebuilds exactly those weights for both items: the CKA of a
    model with itself is 1 on the diagonal."""
    analysis = workdir / "seeded"
    assert cli("analyze", "vit-micro-32", "--seed", "5", "--num-images", "8", "--batch-size", "4", "--out", analysis,
               "--no-progress")[0] == 0
    out = workdir / "compare_self"
    status, printed, _ = cli("compare", analysis, analysis, "--num-images", "8", "--batch-size", "4", "--out", out,
                             "--no-progress")
    assert status == 0
    pair = json.loads((out / "cka_across.json").read_text())["pairs"][0]
    matrix = torch.tensor(pair["matrix"], dtype=torch.float64)
    torch.testing.assert_close(matrix.diagonal(), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-6)
    assert "seeded vs seeded-2: mean diagonal 1.000" in printed


def test_labels_name_a_checkpoint_by_its_run_and_stay_unique():
    from mimlens.analysis.compare import labels_for

    items = ["runs/x/checkpoints/last.pt", "runs/y/checkpoints/last.pt", "old/x/checkpoints/last.pt",
             "runs/x/checkpoints/step_500.safetensors", "timm:vit_small_patch16_224", "vit-micro-32", "runs/x/",
             "weights/mae_pretrain_vit_base.pth"]
    assert labels_for(items) == ["x", "y", "x-2", "x-step_500", "vit_small_patch16_224", "vit-micro-32", "x-3",
                                 "mae_pretrain_vit_base.pth"]


def test_compare_of_two_runs_checkpoints_labels_each_by_its_run(demo_dir, workdir, cli):
    import shutil

    copy = workdir / "elsewhere" / "pretrain_simmim"
    shutil.copytree(demo_dir / "pretrain_simmim", copy)
    out = workdir / "compare_checkpoints"
    status, printed, _ = cli("compare", demo_dir / "pretrain_simmim" / "checkpoints" / "last.pt",
                             copy / "checkpoints" / "last.pt", "--num-images", "4", "--batch-size", "4",
                             "--out", out, "--no-progress")
    assert status == 0
    assert [m["label"] for m in json.loads((out / "compare.json").read_text())["models"]] == [
        "pretrain_simmim", "pretrain_simmim-2"]
    (pair,) = json.loads((out / "cka_across.json").read_text())["pairs"]
    assert (pair["model_a"], pair["model_b"]) == ("pretrain_simmim", "pretrain_simmim-2")
    assert "pretrain_simmim vs pretrain_simmim-2: mean diagonal" in printed and "last.pt" not in pair["model_a"]
    assert (out / "attention" / "pretrain_simmim-2.json").is_file()
