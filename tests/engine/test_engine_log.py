"""log.jsonl: one line per logged step with the lr each update used, window means and epoch summaries."""

import json
import math

import pytest
from engine_toys import Regression, identity

from mimlens.engine import train


def test_log_lines_state_the_lr_of_each_update_and_window_means(tmp_path, cfg, toy_images):
    cfg["optim"].update(base_lr=256e-3, batch_size=8, warmup_steps=2, warmup_lr=0.0, min_lr=0.0, clip_grad=None)
    cfg["train"].update(steps=6, log_every=1)
    train(Regression(), toy_images(16), identity, cfg, tmp_path / "every")
    lines = [json.loads(line) for line in (tmp_path / "every" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in lines if not r.get("epoch_end")]
    lr = 8e-3  # 256e-3 × 8 / 256
    expected = [0.0, lr / 2] + [0.5 * lr * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in steps] == [0, 0, 1, 1, 2, 2]
    assert [r["lr"] for r in steps] == pytest.approx(expected)
    ends = [r for r in lines if r.get("epoch_end")]
    assert [r["epoch"] for r in ends] == [0, 1, 2]
    assert ends[1]["loss"] == pytest.approx((steps[2]["loss"] + steps[3]["loss"]) / 2)

    cfg["train"]["log_every"] = 3
    train(Regression(), toy_images(16), identity, cfg, tmp_path / "third")
    windows = [json.loads(line) for line in (tmp_path / "third" / "log.jsonl").read_text().splitlines()]
    windows = [r for r in windows if not r.get("epoch_end")]
    assert [r["step"] for r in windows] == [2, 3, 4, 6]  # every 3rd step and every epoch end
    assert windows[1]["loss"] == pytest.approx(steps[2]["loss"])
    assert windows[3]["loss"] == pytest.approx((steps[4]["loss"] + steps[5]["loss"]) / 2)


def test_without_a_terminal_progress_is_a_plain_line_at_most_once_a_minute(tmp_path, cfg, toy_images, capsys,
                                                                           monkeypatch):
    import mimlens.engine.runlog as runlog

    cfg["train"].update(steps=6, log_every=1)
    cfg["run"]["progress"] = True  # pytest's stderr is no terminal: lines instead of a bar
    train(Regression(), toy_images(16), identity, cfg, tmp_path / "a")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert lines == [lines[-1]] and lines[-1].startswith("step 6/6 (100 %), loss ")  # only the last, within 60 s

    monkeypatch.setattr(runlog, "LINE_EVERY_S", 0.0)
    train(Regression(), toy_images(16), identity, cfg, tmp_path / "b")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == [f"{s}/6" for s in range(1, 7)] and "ETA" in lines[0]


def test_durations_read_as_people_write_them():
    from mimlens.engine.runlog import format_duration

    assert [format_duration(s) for s in (45, 720, 7500)] == ["45 s", "12 min", "2 h 05 min"]


def test_a_rerun_without_a_checkpoint_starts_the_log_afresh(tmp_path, cfg, toy_images):
    """A run killed before its first checkpoint left lines; the rerun starts at step 0 and so does its log."""
    cfg["train"].update(steps=4, log_every=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("".join(json.dumps({"step": s, "epoch": 0, "lr": 0.0, "loss": 1.0}) + "\n"
                                           for s in (1, 2, 3)))
    train(Regression(), toy_images(16), identity, cfg, run)
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if not r.get("epoch_end")] == [1, 2, 3, 4]
    assert all(r["loss"] != 1.0 for r in lines)
