import json

import pytest

from mimlens.cli import main
from mimlens.pretrain.masking import avg_dist


def test_masks_command_writes_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["masks", "--img-size", "32", "--mask-patch", "16", "8", "--ratio", "0.5", "0.8",
                   "--num-masks", "6", "--seed", "3", "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "AvgDist of SimMIM random masking at 32 px" in printed and "every block is masked" in printed
    doc = json.loads((out / "avgdist.json").read_text())
    assert doc["img_size"] == 32 and doc["num_masks"] == 6 and "pixel centres" in doc["convention"]
    settings = {(r["mask_patch_size"], r["ratio"]): r["avg_dist_px"] for r in doc["settings"]}
    assert set(settings) == {(8, 0.5), (8, 0.8), (16, 0.5), (16, 0.8)}
    assert settings[(16, 0.8)] is None  # 4 blocks, ceil(3.2) = 4 masked
    for patch, ratio in [(8, 0.5), (8, 0.8), (16, 0.5)]:
        assert settings[(patch, ratio)] == pytest.approx(avg_dist(32, patch, ratio, num_masks=6, seed=3))
    for name in ("avgdist.png", "mask_examples.png"):
        assert (out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mask_patch_sizes" in (out / "config.yaml").read_text()


def test_masks_command_sweep_uses_the_paper_grid(tmp_path):
    out = tmp_path / "sweep"
    assert main(["masks", "--sweep", "--img-size", "32", "--ratio", "0.5", "--num-masks", "2", "--out", str(out)]) == 0
    doc = json.loads((out / "avgdist.json").read_text())
    assert [r["mask_patch_size"] for r in doc["settings"]] == [4, 8, 16, 32]
    assert doc["settings"][-1]["avg_dist_px"] is None  # one 32 px block, masked


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--img-size", "30", "--mask-patch", "8"], "not divisible by mask_patch_size 8"),
        (["--ratio", "1.0"], "leaves no visible pixel"),
        (["--num-masks", "0", "--img-size", "32"], "num_masks must be at least 1"),
    ],
)
def test_masks_command_errors_are_one_line(tmp_path, capsys, flags, words):
    assert main(["masks", *flags, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mimlens masks: error:") and words in err
