import json

import pytest
import torch
import yaml

from mimlens.cli import main
from mimlens.models import load_model

TINY = ["--init", "vit-micro-32", "--data", "synthetic:32", "--num-eval", "16", "--no-progress"]


def _finetune(out, task, steps, *extra):
    assert main(["finetune", task, *TINY, "--steps", str(steps), "--out", str(out), *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_depth_finetune_improves_rmse_and_writes_the_run(tmp_path):
    before = _finetune(tmp_path / "start", "depth", 0, "--batch-size", "8")
    after = _finetune(tmp_path / "run", "depth", 12, "--batch-size", "8", "--lr", "0.032")
    assert after["metrics"]["rmse"] < before["metrics"]["rmse"]
    primary = after["primary"]
    assert (primary["name"], primary["value"], primary["higher_is_better"]) == ("rmse", after["metrics"]["rmse"], False)
    assert after["variant"]["silog"].startswith("100 * sqrt") and after["variant"]["num_images"] == 16
    run = tmp_path / "run"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["task"] == "depth" and cfg["model"]["name"] == "vit-micro-32" and cfg["optim"]["lr"] == 1e-3
    log = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if not r.get("epoch_end")]
    assert [r["step"] for r in log] == [4, 8, 10, 12] and all(r["lr"] <= 1e-3 for r in log)  # epochs of 4 steps
    groups = json.loads((run / "param_groups.json").read_text())
    scales = {r["name"]: r["lr_scale"] for r in groups}
    assert scales["model.encoder.blocks.2.attn.qkv.weight"] == pytest.approx(0.65)  # last of 3 blocks
    assert scales["model.encoder.patch_embed.proj.weight"] == pytest.approx(0.65**4)
    encoder, info = load_model(run)
    assert info["format"] != "init" and len(encoder.blocks) == 3


def test_drop_sweep_writes_table_figure_and_rebuildable_runs(tmp_path):
    sweep = tmp_path / "sweep"
    assert main(["finetune", "depth", *TINY, "--steps", "1", "--batch-size", "16", "--sweep-drop", "0,2",
                 "--out", str(sweep)]) == 0
    table = json.loads((sweep / "drop_sweep.json").read_text())
    assert table["metric"] == "rmse" and [r["drop_last"] for r in table["rows"]] == [0, 2]
    assert all(set(r) >= {"rmse", "d1", "silog"} for r in table["rows"])
    assert (sweep / "figures" / "layer_drop.png").stat().st_size > 0
    dropped = json.loads((sweep / "drop_2" / "metrics.json").read_text())
    assert dropped["drop_last"] == 2
    encoder, _ = load_model(sweep / "drop_2")  # config.yaml records depth 1
    assert len(encoder.blocks) == 1


def test_errors_are_one_line_messages(tmp_path, capsys):
    assert main(["finetune", "depth", *TINY, "--sweep-drop", "0,x", "--out", str(tmp_path / "a")]) == 2
    assert "--sweep-drop expects" in capsys.readouterr().err
    assert main(["finetune", "depth", *TINY, "--drop-last", "3", "--out", str(tmp_path / "b")]) == 2
    assert "0 <= k < 3" in capsys.readouterr().err
    args = ["finetune", "track", "--init", "swin-tiny-64", "--steps", "0", "--out", str(tmp_path / "c")]
    assert main(args) == 2
    assert "windows" in capsys.readouterr().err


@pytest.mark.slow
def test_every_task_improves_over_its_untrained_start(tmp_path):
    """cls and linear are scored on their training images (can the run fit them?), pose with lenient OKS
    sigmas so that a few steps show; depth is covered above."""
    torch.manual_seed(0)
    (tmp_path / "fit.yaml").write_text("data: {eval_split: train}\n")
    (tmp_path / "pose.yaml").write_text("pose: {oks_sigmas: [0.2, 0.2, 0.2, 0.2, 0.2]}\n")
    cases = {
        "cls": ("--config", str(tmp_path / "fit.yaml"), "--batch-size", "16", "--lr", "0.016"),
        "linear": ("--config", str(tmp_path / "fit.yaml"), "--batch-size", "16"),
        "pose": ("--config", str(tmp_path / "pose.yaml"), "--batch-size", "16", "--lr", "0.016"),
        "track": ("--batch-size", "16", "--num-eval", "8"),
    }
    for task, extra in cases.items():
        before = _finetune(tmp_path / f"{task}0", task, 0, *extra)
        after = _finetune(tmp_path / f"{task}1", task, 30, *extra)
        name = after["primary"]["name"]
        assert after["metrics"][name] > before["metrics"][name], (task, before["metrics"], after["metrics"])


def test_classification_on_an_image_folder_takes_the_folders_labels_by_default(tmp_path):
    from PIL import Image

    for split, count in (("train", 8), ("val", 4)):
        for k, colour in enumerate(((255, 0, 0), (0, 0, 255))):
            folder = tmp_path / "data" / split / f"class{k}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40, 40), colour).save(folder / f"{i}.png")
    result = _finetune(tmp_path / "run", "cls", 2, "--data", str(tmp_path / "data"), "--batch-size", "4")
    assert result["variant"]["label"] == "label" and result["variant"]["num_classes"] == 2
    assert result["variant"]["num_images"] == 8
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["cls"]["label"] == "label"  # the resolved default is what the run records


def test_an_image_size_the_patch_does_not_divide_is_one_line(tmp_path, capsys):
    (tmp_path / "odd.yaml").write_text("model: {kwargs: {img_size: 30}}\n")
    assert main(["finetune", "depth", *TINY, "--steps", "0", "--config", str(tmp_path / "odd.yaml"),
                 "--out", str(tmp_path / "run")]) == 2
    assert "image size 30 px is not a multiple of the 8 px patch" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_final_line_and_report_give_se_baseline_and_trained(tmp_path, capsys):
    import re

    from mimlens.report.runs import _metrics

    metrics = _finetune(tmp_path / "start", "depth", 0, "--batch-size", "8")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    primary, best = metrics["primary"], metrics["trained_test"]["baseline"]
    assert best == "training mean depth map" and metrics["trained"] is False  # an untrained head
    expected = (f"finetune depth: rmse {primary['value']:.4g} ± {primary['se']:.2g} (SE, 16 images) after 0 steps; "
                f"best trivial baseline (training mean depth map) {metrics['baselines'][best]['rmse']:.4g}: "
                f"not trained: {tmp_path / 'start'}")
    assert line == expected
    html = _metrics(metrics)
    for fact in ("standard error", "evaluation items", "best trivial baseline", "training mean depth map: ",
                 "<dt>trained</dt><dd>no</dd>", "better than the best trivial baseline by more than 2 SE"):
        assert fact in html, fact
    assert re.search(r"<dt>standard error</dt><dd>0\.\d+", html)
