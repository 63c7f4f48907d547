import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)  # tiny models: one thread is as fast, and far faster when cores are shared


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _listing_cache(tmp_path_factory):
    """Image-folder listings are cached in a temporary folder, never in the user's cache (child processes too)."""
    os.environ["MIMLENS_CACHE"] = str(tmp_path_factory.mktemp("mimlens-cache"))


# The headless-Chromium check of a report: load the page from file:// in a 1280 x 900 window with a probe script
# that records script errors, failed resources and console.error, lists broken images and figures cut off at the
# right: a table of figures scrolling sideways, an image reaching past the page (a wide table of numbers may scroll).
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--window-size=1280,900",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
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
  var page = document.querySelector('.page'), cut = [];
  var right = (page || document.body).getBoundingClientRect().right;
  document.querySelectorAll('.table-wrap').forEach(function (wrap) {
    if (wrap.querySelector('img') && wrap.scrollWidth > wrap.clientWidth + 1) {
      cut.push('table ' + wrap.textContent.slice(0, 40));
    }
  });
  for (var j = 0; j < document.images.length; j++) {
    if (document.images[j].getBoundingClientRect().right > right + 1) cut.push('image ' + document.images[j].alt);
  }
  var out = document.createElement('pre'); out.id = 'mimlens-probe';
  out.textContent = JSON.stringify({images: document.images.length, broken: broken, errors: window.__errors,
                                    cut: cut, width: window.innerWidth});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture
def browser():
    """``browser(report.html) -> {"images", "broken", "errors", "cut", "width", "console"}`` (skipped without
    Chromium)."""
    return browser_check


def browser_check(html_path: Path) -> dict:
    if not CHROMIUM.exists():
        pytest.skip("the browser check needs Chromium at /usr/bin/chromium (Debian package 'chromium')")
    probed = html_path.with_name("probe_" + html_path.name)
    probed.write_text(html_path.read_text().replace("<head>", "<head>" + PROBE, 1))
    with tempfile.TemporaryDirectory() as profile:
        command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--dump-dom",
                   probed.resolve().as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    probed.unlink()
    start = result.stdout.find('<pre id="mimlens-probe">')
    assert start >= 0, f"Chromium printed no probe result (exit {result.returncode}): {result.stderr[-2000:]}"
    found = json.loads(result.stdout[start:].split(">", 1)[1].split("</pre>", 1)[0].replace("&quot;", '"'))
    found["console"] = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return found
