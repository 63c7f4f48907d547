"""SIGINT, SIGTERM and SIGUSR1 (a scheduler's warning before the time limit) during a pre-training or a
fine-tuning: the run finishes its step, writes a checkpoint and exits with 128 + the signal, the status that says
"stopped, rerun to resume"; the rerun (here, in this process) ends with the same weights, bit for bit, and the
same log as an uninterrupted run.

The signal is sent by the training process to itself, right after update ``STOP_AT`` (a patch of the engine's
``Trainer._update`` made by the child's start-up code below, not by mimlens), so the test does not race the run."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from mimlens.cli import main
from mimlens.signals import stopped_for_resume

STOP_AT = 3
SIGNALLING_MAIN = """
import os, signal, sys
from mimlens.engine import loop
from mimlens.cli import main

at, sig = int(os.environ["MIMLENS_TEST_STOP_AT"]), getattr(signal, os.environ["MIMLENS_TEST_SIGNAL"])
update = loop.Trainer._update

def update_then_signal(self, batches):
    out = update(self, batches)
    if self.step + 1 == at:
        os.kill(os.getpid(), sig)
    return out

loop.Trainer._update = update_then_signal
sys.exit(main(sys.argv[1:]))
"""
COMMANDS = {
    "pretrain": ["pretrain", "simmim", "--arch", "vit-micro-32", "--data", "synthetic:32"],
    "finetune": ["finetune", "cls", "--init", "vit-micro-32", "--data", "synthetic:32", "--num-eval", "8"],
}


def argv(command, out, config):
    return [*COMMANDS[command], "--steps", "6", "--batch-size", "8", "--device", "cpu", "--config", str(config),
            "--no-progress", "--out", str(out)]


def run_signalled(command, out, config, signal_name):
    """The command in a child process that sends itself ``signal_name`` after update ``STOP_AT``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MIMLENS_TEST_STOP_AT": str(STOP_AT),
           "MIMLENS_TEST_SIGNAL": signal_name}
    return subprocess.run([sys.executable, "-c", SIGNALLING_MAIN, *argv(command, out, config)], env=env,
                          capture_output=True, text=True, timeout=300)


def run_here(command, out, config, capsys):
    """The command in this process, on one thread as the child runs; returns its stdout."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(argv(command, out, config)) == 0, capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("signals") / "cfg.yaml"
    path.write_text("train: {log_every: 1, checkpoint_every: 500}\n")
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, config):
    """The uninterrupted run of each command, made once (on first use)."""
    runs = {}

    def get(command, capsys):
        if command not in runs:
            runs[command] = tmp_path_factory.mktemp("whole") / command
            run_here(command, runs[command], config, capsys)
        return runs[command]

    return get


def steps(out):
    """(step, loss) of every logged step, and the epoch ends, in file order."""
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r.get("epoch_end", False), r["loss"]) for r in records]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM", "SIGUSR1"])
def test_a_stop_signal_checkpoints_and_the_rerun_ends_as_an_uninterrupted_run(tmp_path, config, uninterrupted,
                                                                              capsys, command, signal_name):
    out = tmp_path / "run"
    stopped = run_signalled(command, out, config, signal_name)
    assert stopped.returncode == 128 + getattr(signal, signal_name), stopped.stderr
    assert stopped_for_resume(stopped.returncode) and not stopped_for_resume(1) and not stopped_for_resume(2)
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"mimlens {command}: stopped by {signal_name} after step {STOP_AT}/6; checkpoint "
        f"{out / 'checkpoints' / 'last.pt'} written, rerun the same command to resume")
    assert "Traceback" not in stopped.stderr
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == STOP_AT
    assert not (out / "backbone.safetensors").exists()
    assert [s for s, _, _ in steps(out)] == list(range(1, STOP_AT + 1))

    assert f"resuming at step {STOP_AT}" in run_here(command, out, config, capsys)
    whole = uninterrupted(command, capsys)
    assert steps(out) == steps(whole)  # no step logged twice, none missing, the same losses
    for final in ([load_file(d / "backbone.safetensors") for d in (out, whole)],
                  [torch.load(d / "checkpoints" / "last.pt", weights_only=True)["model"] for d in (out, whole)]):
        assert final[0].keys() == final[1].keys()
        for name, tensor in final[0].items():
            assert torch.equal(tensor, final[1][name]), name
