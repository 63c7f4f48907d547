"""Backbone snapshots every ``train.snapshot_every`` steps hold the encoder as it was at that step."""

import torch
from engine_toys import Regression
from safetensors.torch import load_file

from mimlens.engine import train
from mimlens.models.snapshots import list_snapshots


class _Recorder(Regression):
    """Keeps a copy of the encoder's weights after each update (seen at the start of the next one)."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def on_step(self, step, total_steps):
        self.seen[step] = {k: v.clone() for k, v in self.encoder.state_dict().items()}


def test_snapshots_are_written_every_n_steps_with_that_steps_weights(tmp_path, cfg, toy_images):
    cfg["train"].update(steps=6, snapshot_every=2)
    model = _Recorder()
    train(model, toy_images(16), lambda item: item, cfg, tmp_path)
    snapshots = list_snapshots(tmp_path)
    assert [step for step, _ in snapshots] == [2, 4, 6]
    for step, path in snapshots[:-1]:  # weights after `step` updates = what the next update started from
        saved = load_file(path)
        for name, value in model.seen[step].items():
            torch.testing.assert_close(saved[name], value, rtol=0, atol=0)
