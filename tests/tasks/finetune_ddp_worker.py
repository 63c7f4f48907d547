"""Run by ``torchrun --nproc_per_node=2`` (and in-process by the test): one tiny fine-tuning per task family."""

import sys
from pathlib import Path

from mimlens.cli import main

COMMON = ["--init", "vit-micro-32", "--data", "synthetic:16", "--num-eval", "6", "--batch-size", "8",
          "--device", "cpu", "--no-progress"]
# task: extra flags (cls without drop path: stochastic depth draws from each process's own RNG stream)
CASES = {
    "cls": ["--steps", "3", "--config", "{tmp}/no_drop_path.yaml"],
    "linear": ["--steps", "3", "--pool", "avg"],
    "depth": ["--steps", "3"],
    "pose": ["--steps", "3"],
    "track": ["--steps", "3", "--num-eval", "4"],
    "det": ["--steps", "0", "--config", "{tmp}/det.yaml"],  # RPN sampling draws from each process's RNG
}


def write_configs(tmp: Path) -> None:
    (tmp / "no_drop_path.yaml").write_text("cls: {drop_path: 0.0}\n")
    (tmp / "det.yaml").write_text("model: {kwargs: {img_size: 64}}\ndet: {channels: 16, proposals: 50}\n")


def run_all(tmp: Path, out: Path) -> None:
    for task, extra in CASES.items():
        flags = [a.format(tmp=tmp) for a in extra]
        assert main(["finetune", task, *COMMON, *flags, "--out", str(out / task)]) == 0


if __name__ == "__main__":
    run_all(Path(sys.argv[1]), Path(sys.argv[2]))
