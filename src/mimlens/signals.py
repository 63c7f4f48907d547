"""Stop signals: a training that gets one finishes its current step, writes a checkpoint and exits.

:data:`STOP_SIGNALS` is the set the engine answers (``SIGINT``: Ctrl-C; ``SIGTERM``: what ``timeout``, systemd and
batch schedulers send; ``SIGUSR1``: a scheduler's warning ahead of the time limit, ``sbatch --signal=USR1@120``).
The exit status of a command a stop signal ended is 128 + the signal (130, 143, 138), as a shell reports it: "stopped
cleanly, rerun the same command to resume" (:func:`stopped_for_resume`), distinct from a failure. While a
:class:`StopSignals` block is active in the main thread, the first stop signal only records itself and puts the
previous handlers back, so a second one acts as it would without the block (Ctrl-C twice aborts at once).
Data-loading worker processes ignore the stop signals (:func:`ignore_in_worker`): the training process decides.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def stop_status(signum: int) -> int:
    """The exit status of a command a stop signal ended: 128 + the signal's number."""
    return 128 + signum


def stopped_for_resume(status: int | None) -> bool:
    """Whether ``status`` says "stopped by a stop signal, what was done is saved: rerun to resume"."""
    return status in {stop_status(s) for s in STOP_SIGNALS}


class StopSignals:
    """Context manager: ``received`` is the first stop signal's number while the block ran, else None."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS):
        self.signals = signals
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python handles signals in the main thread only
            self._previous = {s: signal.signal(s, self._record) for s in self.signals}
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _record(self, signum: int, frame) -> None:
        self.received = signum
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            if handler is not None:  # None: a handler installed outside Python, which cannot be put back
                signal.signal(s, handler)
        self._previous = {}


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def ignore_in_worker(worker_id: int) -> None:
    """``DataLoader`` ``worker_init_fn``: a worker ignores the stop signals (Ctrl-C and ``kill`` of the process
    group reach it too); it ends with the training process."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
