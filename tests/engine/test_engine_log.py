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
