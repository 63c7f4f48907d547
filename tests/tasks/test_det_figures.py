"""The loss-curve figure of detection runs."""

import json

import pytest
from PIL import Image

from mimlens.errors import MimlensError
from mimlens.tasks.detection import LOSS_NAMES
from mimlens.tasks.detection_figures import PANELS, loss_curves


def _run(folder, decay, columns=LOSS_NAMES):
    folder.mkdir()
    lines = [{"step": s, "epoch": 0, "lr": 1e-3, "loss": 1.0, **{c: decay**s for c in columns}} for s in (10, 20, 30)]
    lines.append({"epoch": 0, "epoch_end": True, "loss": 9.0})
    (folder / "log.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return folder


def test_loss_curves_of_two_runs_share_one_figure(tmp_path):
    runs = [_run(tmp_path / "supervised", 0.9), _run(tmp_path / "simmim", 0.95)]
    out = loss_curves(runs, tmp_path / "figures" / "det_loss_curves.png")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > image.height
    assert {roi for _, roi, _ in PANELS} == {"loss_classifier", "loss_box_reg"}


def test_a_run_without_detection_losses_is_named(tmp_path):
    run = _run(tmp_path / "cls", 0.9, columns=("loss_classifier",))
    with pytest.raises(MimlensError, match=r"cls.*log.jsonl lacks .*loss_objectness"):
        loss_curves([run], tmp_path / "x.png")
    with pytest.raises(MimlensError, match="has no log.jsonl"):
        loss_curves([tmp_path], tmp_path / "x.png")
    with pytest.raises(MimlensError, match="one label per run"):
        loss_curves([run], tmp_path / "x.png", labels=["a", "b"])
