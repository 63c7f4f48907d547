"""The paper's shipped study files: they load, their recipes resolve into valid fine-tuning settings with a
source for every number, and ``--plan`` lists every stage and each path the user has not filled in. No model is
built: everything here reads YAML."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mimlens.cli import main
from mimlens.engine.settings import Settings
from mimlens.study.spec import load_study
from mimlens.tasks.run import resolve_config

STUDIES = Path(__file__).resolve().parents[2] / "src" / "mimlens" / "studies"
VIT_B, SWINV2 = STUDIES / "paper-vit-b.yaml", STUDIES / "paper-swinv2.yaml"
RECIPES = sorted((STUDIES / "recipes").glob("*.yaml"))


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    """``~`` is an empty folder: none of the checkpoints and data sets the studies name exist."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_the_vit_b_study_names_the_papers_models_roles_and_tasks(empty_home):
    study = load_study(VIT_B)
    models = {m.name: (m.role, m.arch, m.source) for m in study.models}
    assert models == {
        "simmim": ("mim", "simmim-vit-base-224",
                   str(empty_home / "checkpoints" / "simmim_pretrain__vit_base__img224__800ep.pth")),
        "deit": ("supervised", None, "timm:deit_base_patch16_224.fb_in1k"),
        "moco": ("contrastive", "vit-base-224", str(empty_home / "checkpoints" / "vit-b-300ep.pth.tar")),
        "random": ("random", None, "vit-base-224")}
    assert study.model("deit").pretrained
    assert study.analysis == {"data": str(empty_home / "data" / "imagenet"), "split": "val", "num_images": 5000,
                              "names": ["attention", "cka"]}
    drops = {spec.task: spec.drop_last for spec in study.finetune}
    assert drops == {"depth": (0, 1, 2, 3), "pose": (0, 1, 2, 3), "cls": (0,), "det": (0,)}
    assert study.launch["processes"] == 8 and study.launch["device"] == "cuda"


def test_the_swinv2_study_compares_simmim_with_supervised_downstream(empty_home):
    study = load_study(SWINV2)
    assert {m.name: m.role for m in study.models} == {"simmim": "mim", "supervised": "supervised"}
    assert study.model("simmim").arch == "swinv2-base-192"
    assert study.analysis is None and study.probes is None
    assert [spec.task for spec in study.finetune] == ["depth", "pose", "det"]
    assert all(Path(spec.recipe).name.endswith("_swinv2-b.yaml") for spec in study.finetune)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_each_recipe_resolves_into_valid_settings_on_eight_processes(recipe):
    task = recipe.name.split("_")[0]
    cfg = resolve_config(recipe, {"task": task})
    plan = Settings.from_config(cfg).plan(steps_per_epoch=1000, processes=8)
    assert plan.global_batch == yaml.safe_load(recipe.read_text())["optim"]["batch_size"]
    assert plan.micro_batch * 8 == plan.global_batch


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_number_in_a_recipe_names_its_source(recipe):
    """A line setting a value carries a comment saying where the value comes from."""
    bare = [line for line in recipe.read_text().splitlines()
            if re.match(r"\s*\w+: *[^\s#]", line) and "#" not in line]
    assert bare == []
    assert recipe.name in (STUDIES.parents[2] / "docs" / "paper-study.md").read_text()


def plan_output(study: Path, out: Path, capsys) -> tuple[list[str], list[str]]:
    assert main(["study", str(study), "--plan", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    stages = [m.group(1) for line in lines if (m := re.match(r"\[\d+/\d+\] (\S+):", line))]
    return stages, [line for line in lines if line.startswith("missing:")]


def test_the_vit_b_plan_lists_every_stage_and_each_path_to_fill_in(empty_home, tmp_path, capsys):
    stages, missing = plan_output(VIT_B, tmp_path / "out", capsys)
    models = ("simmim", "deit", "moco", "random")
    assert stages == (["weights_deit", "weights_random"] + [f"analyze_{m}" for m in models] + ["compare"]
                      + [f"finetune_{t}_{m}" for t in ("depth", "pose", "cls", "det") for m in models]
                      + ["findings"])
    home = empty_home
    assert missing == [
        f"missing: models.simmim.source: {home}/checkpoints/simmim_pretrain__vit_base__img224__800ep.pth",
        f"missing: models.moco.source: {home}/checkpoints/vit-b-300ep.pth.tar",
        f"missing: analysis.data: {home}/data/imagenet",
        f"missing: finetune.depth.data: {home}/data/nyu_depth_v2",
        f"missing: finetune.pose.data: {home}/data/coco",
        f"missing: finetune.cls.data: {home}/data/cub200",
        f"missing: finetune.det.data: {home}/data/coco"]


def test_a_filled_in_path_leaves_the_missing_list_and_the_stages_stay_the_same(empty_home, tmp_path, capsys):
    before, _ = plan_output(VIT_B, tmp_path / "out", capsys)
    (empty_home / "checkpoints").mkdir()
    (empty_home / "checkpoints" / "vit-b-300ep.pth.tar").write_bytes(b"")
    (empty_home / "data" / "coco").mkdir(parents=True)
    after, missing = plan_output(VIT_B, tmp_path / "out", capsys)
    assert after == before
    assert [line.split(":")[1].strip() for line in missing] == [
        "models.simmim.source", "analysis.data", "finetune.depth.data", "finetune.cls.data"]


def test_the_swinv2_plan_lists_every_stage_and_each_path_to_fill_in(empty_home, tmp_path, capsys):
    stages, missing = plan_output(SWINV2, tmp_path / "out", capsys)
    assert stages == (["weights_supervised"] + [f"finetune_{t}_{m}" for t in ("depth", "pose", "det")
                                                for m in ("simmim", "supervised")] + ["findings"])
    assert [line.split(":")[1].strip() for line in missing] == [
        "models.simmim.source", "finetune.depth.data", "finetune.pose.data", "finetune.det.data"]


def gpu_hours(lines: list[str], stage: str) -> float:
    """The GPU-hour estimate printed under ``stage`` in a plan."""
    at = next(i for i, line in enumerate(lines) if re.match(rf"\[\d+/\d+\] {stage}:", line))
    return float(re.search(r"≈ ([\d.e+-]+) GPU-h", lines[at + 1]).group(1))


def test_the_plan_estimates_gpu_hours_from_the_published_throughputs(empty_home, tmp_path, capsys):
    """Known answers worked by hand from timm's RTX 3090 AMP tables (vit_base_patch16_224: 1132.21 img/s
    forward, 390.86 img/s training; beit_base_patch16_224: 1045.12 and 358.29) and the recipes' lengths; the
    plan prints 3 significant digits."""
    assert main(["study", str(VIT_B), "--plan", "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    # 2 analyses over 5000 images at 1045.12 img/s (the official SimMIM ViT-B is BEiT-layout)
    assert gpu_hours(lines, "analyze_simmim") == pytest.approx(2 * 5000 / 1045.12 / 3600, rel=5e-3)
    # 4 models: each forwards 5000 images against each of the 3 others
    compare = 3 * 5000 / 1045.12 + 3 * 3 * 5000 / 1132.21
    assert gpu_hours(lines, "compare") == pytest.approx(compare / 3600, rel=5e-3)
    # depth: 25 epochs of ceil(24231 / 24) = 1010 steps at batch 24, 4 runs of the drop sweep for DeiT
    assert gpu_hours(lines, "finetune_depth_deit") == pytest.approx(4 * 25 * 1010 * 24 / 390.86 / 3600, rel=5e-3)
    # detection: 184375 steps at batch 64
    assert gpu_hours(lines, "finetune_det_simmim") == pytest.approx(184375 * 64 / 358.29 / 3600, rel=5e-3)
    total = next(line for line in lines if line.startswith("still to run:"))
    assert "RTX 3090" in total and "benchmark-" in total and "without an estimate" not in total


def test_the_swinv2_plan_scales_the_throughput_by_pixels(empty_home, tmp_path, capsys):
    """SwinV2-B at 192 px from timm's swinv2_base_window8_256 row (150.28 img/s training at 256 px)."""
    assert main(["study", str(SWINV2), "--plan", "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    rate = 150.28 * (256 / 192) ** 2
    assert gpu_hours(lines, "finetune_det_simmim") == pytest.approx(92187 * 64 / rate / 3600, rel=5e-3)


def test_the_plan_is_made_without_importing_torch(empty_home, tmp_path):
    """--plan reads the study file alone, so it answers in well under a second (torch takes seconds to import)."""
    code = ("import sys; from mimlens.cli import main; rc = main(sys.argv[1:]); "
            "sys.exit(10 + rc if 'torch' in sys.modules else rc)")
    result = subprocess.run([sys.executable, "-c", code, "study", str(VIT_B), "--plan", "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(empty_home)})
    assert result.returncode == 0, (result.returncode, result.stderr)  # 10 would mean torch was imported
    assert "still to run: ≈" in result.stdout
