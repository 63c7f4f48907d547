"""Run directories made once per session through ``mimlens.cli.main``: tiny models, a handful of images."""

import contextlib
import io
import json
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mimlens.cli import main

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
# Runs before anything else on the page: records script errors, failed resources and console.error, then on
# load writes how many images there are and which are broken into a <pre> that --dump-dom prints.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(e.message || ('failed to load ' + (e.target && (e.target.src || e.target.href))));
}, true);
(function () { var original = console.error;
  console.error = function () { window.__errors.push(Array.prototype.join.call(arguments, ' '));
                                original.apply(console, arguments); }; })();
window.addEventListener('load', function () {
  var broken = [];
  for (var i = 0; i < document.images.length; i++) {
    var img = document.images[i];
    if (!img.complete || img.naturalWidth === 0) broken.push(img.alt || i);
  }
  var out = document.createElement('pre'); out.id = 'mimlens-probe';
  out.textContent = JSON.stringify({images: document.images.length, broken: broken, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture
def cli(capsys):
    """``cli(*argv) -> (exit status, stdout, stderr)`` of ``mimlens ARGV`` in this process."""

    def run(*argv):
        capsys.readouterr()
        status = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


@pytest.fixture
def browser():
    """``browser(report.html) -> findings`` of a headless Chromium load (the test is skipped without Chromium)."""
    return _browser_check


def _browser_check(html_path: Path) -> dict:
    """Load a report in headless Chromium from file:// and return the probe's findings (skip without Chromium)."""
    if not CHROMIUM.exists():
        pytest.skip("the browser check needs Chromium at /usr/bin/chromium (Debian package 'chromium')")
    text = html_path.read_text()
    probed = html_path.with_name("probe_" + html_path.name)
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1))
    with tempfile.TemporaryDirectory() as profile:
        command = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
                   "--dump-dom", probed.resolve().as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    probed.unlink()
    start = result.stdout.find('<pre id="mimlens-probe">')
    assert start >= 0, f"Chromium printed no probe result (exit {result.returncode}): {result.stderr[-2000:]}"
    found = json.loads(result.stdout[start:].split(">", 1)[1].split("</pre>", 1)[0].replace("&quot;", '"'))
    found["console"] = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return found


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
