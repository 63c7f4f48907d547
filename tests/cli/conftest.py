"""Run directories made once per session through ``mimlens.cli.main``: tiny models, a handful of images."""

import contextlib
import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mimlens.cli import main


@pytest.fixture
def cli(capsys):
    """``cli(*argv) -> (exit status, stdout, stderr)`` of ``mimlens ARGV`` in this process."""

    def run(*argv):
        capsys.readouterr()
        status = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run




@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="session")
def image_folder(workdir):
    """A flat folder of five photos-like images of different sizes, one corrupt file and a text file."""
    folder = workdir / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 48), (32, 32), (50, 36), (64, 64), (33, 45)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really a png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="session")
def checkpoint(workdir):
    """A vit-micro-32 backbone with fixed weights, saved as safetensors in timm key names."""
    from mimlens.models import build_model, save_backbone

    torch.manual_seed(1)
    return save_backbone(build_model("vit-micro-32"), workdir / "micro.safetensors")


@pytest.fixture(scope="session")
def analysis_run(workdir, image_folder, checkpoint):
    """``mimlens analyze CHECKPOINT --arch vit-micro-32 --data FOLDER --cka`` in batches of two images."""
    out = workdir / "analysis"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["analyze", str(checkpoint), "--arch", "vit-micro-32", "--data", str(image_folder),
                       "--num-images", "10", "--batch-size", "2", "--cka", "--out", str(out), "--no-progress"])
    assert status == 0
    return SimpleNamespace(path=out, stdout=printed.getvalue())


@pytest.fixture(scope="session")
def compare_run(workdir, image_folder, analysis_run):
    """``mimlens compare ANALYSIS_RUN swin-tiny-64``: a reused ViT analysis against a Swin analysed here."""
    out = workdir / "compare"
    torch.manual_seed(2)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["compare", str(analysis_run.path), "swin-tiny-64", "--data", str(image_folder),
                       "--num-images", "4", "--batch-size", "4", "--out", str(out), "--no-progress"])
    assert status == 0
    return SimpleNamespace(path=out, stdout=printed.getvalue())


@pytest.fixture(scope="session")
def demo_dir(workdir):
    """A directory of runs as the demo lays them out: a masks run and a two-step SimMIM pre-training run."""
    demo = workdir / "demo"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["masks", "--img-size", "32", "--mask-patch", "8", "--ratio", "0.6", "--num-masks", "4",
                     "--out", str(demo / "masks")]) == 0
        assert main(["pretrain", "simmim", "--arch", "vit-micro-32", "--data", "synthetic:16", "--steps", "2",
                     "--batch-size", "8", "--out", str(demo / "pretrain_simmim"), "--no-progress"]) == 0
    return demo
