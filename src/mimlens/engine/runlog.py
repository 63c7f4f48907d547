"""What a training run reports: ``log.jsonl``, optional TensorBoard, a tqdm bar (main process only).

``log.jsonl`` holds one JSON object per line: ``{"step", "epoch", "lr", "loss", ..., "images_per_s"}``
for logged steps (``step``: updates done so far; ``epoch``: 0-based; ``lr``: the one the last update used;
the other values are means over the steps since the previous line and over all processes) and
``{"epoch", "epoch_end": true, "step", "loss", ...}`` at the end of each epoch. A resumed run first drops the
lines written after its checkpoint (by the interrupted run; all of them when it had written none), then appends:
the file reads as one run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mimlens.io import save_text

LINE_EVERY_S = 60.0


class RunLog:
    def __init__(self, run_dir: Path, *, total_steps: int, initial_step: int, enabled: bool, progress: bool,
                 tensorboard: bool):
        self.enabled = enabled
        path = run_dir / "log.jsonl"
        if enabled and path.is_file():  # from a checkpoint's step, or from 0 when there is none
            kept = [line for line in path.read_text().splitlines() if json.loads(line).get("step", 0) <= initial_step]
            save_text("".join(f"{line}\n" for line in kept), path)
        self._file = open(path, "a") if enabled else None  # noqa: SIM115 (closed in close())
        self._tb = _summary_writer(run_dir / "tensorboard") if enabled and tensorboard else None
        self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True,
                         disable=not (enabled and progress and sys.stderr.isatty()))
        # without a terminal (nohup, CI, torchrun logs): a plain line at most once a minute and at the end
        self._lines = enabled and progress and self._bar.disable
        self._total, self._start_step = total_steps, initial_step
        self._start = self._last_line = time.monotonic()

    def advance(self) -> None:
        self._bar.update(1)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if "step" in record and not record.get("epoch_end"):
            if self._tb is not None:
                for key, value in record.items():
                    if key not in ("step", "epoch") and isinstance(value, float):
                        self._tb.add_scalar(f"train/{key}", value, record["step"])
            self._bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.3g}",
                                  img_s=f"{record['images_per_s']:.0f}", refresh=False)
            self._progress_line(record)

    def _progress_line(self, record: dict[str, Any]) -> None:
        """``step 120/2800 (4 %), loss 0.4123, lr 3.2e-04, 95 img/s, ETA 21 min`` on stdout, when due."""
        now, step = time.monotonic(), int(record["step"])
        if not self._lines or (now - self._last_line < LINE_EVERY_S and step < self._total):
            return
        self._last_line = now
        rate = (step - self._start_step) / max(now - self._start, 1e-9)
        eta = format_duration((self._total - step) / rate) if rate > 0 else "?"
        print(f"step {step}/{self._total} ({100 * step / self._total:.0f} %), loss {record['loss']:.4g}, "
              f"lr {record['lr']:.2g}, {record['images_per_s']:.0f} img/s, ETA {eta}", flush=True)

    def close(self) -> None:
        self._bar.close()
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _summary_writer(path: Path):
    """A TensorBoard writer when the ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))
