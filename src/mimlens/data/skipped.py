"""The unreadable files an image folder met, summed over DataLoader workers and ``torchrun`` processes.

A :class:`SkipLog` is made with its dataset in each process: a small temporary folder where that process and
each of its DataLoader workers (which hold copies of the dataset) append the files they skipped, one JSON line
``[path, reason]`` per file, to a file of their own. :func:`gathered` reads the folder and joins the lists of all
processes; the folder goes when the process that made it drops its dataset or exits.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path


def _remove(folder: str, owner: int) -> None:
    if os.getpid() == owner:  # never from a forked DataLoader worker's copy
        shutil.rmtree(folder, ignore_errors=True)


class SkipLog:
    """Unreadable files of one dataset in this process and its DataLoader workers, each recorded once."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="mimlens-skipped-")
        self._met: set[str] = set()
        weakref.finalize(self, _remove, self.folder, os.getpid())

    def record(self, path: str, reason: str) -> None:
        """Note ``path`` as skipped for ``reason`` (once per process)."""
        if path in self._met:
            return
        self._met.add(path)
        with open(Path(self.folder) / f"{os.getpid()}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps([path, reason]) + "\n")

    def entries(self) -> list[tuple[str, str]]:
        """Every ``(path, reason)`` this process and its workers recorded, each path once, sorted by path."""
        found: dict[str, str] = {}
        for name in sorted(os.listdir(self.folder)) if os.path.isdir(self.folder) else []:
            with open(Path(self.folder) / name, encoding="utf-8") as f:
                for line in f:
                    if line.endswith("\n"):  # a line still being written is read next time
                        path, reason = json.loads(line)
                        found.setdefault(path, reason)
        return sorted(found.items())


def gathered(log: SkipLog) -> list[tuple[str, str]]:
    """:meth:`SkipLog.entries` joined over the ``torchrun`` processes (a collective: every process calls it)."""
    from mimlens import distributed

    local = log.entries()
    if distributed.world_size() == 1:
        return local
    import torch.distributed as dist

    parts: list[list[tuple[str, str]]] = [[] for _ in range(distributed.world_size())]
    dist.all_gather_object(parts, local)
    found: dict[str, str] = {}
    for part in parts:
        for path, reason in part:
            found.setdefault(path, reason)
    return sorted(found.items())
