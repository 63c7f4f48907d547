"""COCO annotation files parsed once per process: the last two parsed indexes are kept, keyed by the file's
resolved path, mtime and size, so repeated builds of a split in one process (the training and evaluation
sets of ``eval_split: train``, a drop sweep, a demo's stages) share one parse, and a changed file is parsed
again."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any


def parsed_once(path: Path, parse: Callable[[Path], Any]) -> Any:
    """``parse(path)``, or the index an earlier call returned for the same unchanged file and ``parse``."""
    stat = path.stat()
    return _parsed(str(path.resolve()), stat.st_mtime_ns, stat.st_size, parse)


@lru_cache(maxsize=2)
def _parsed(path: str, mtime_ns: int, size: int, parse: Callable[[Path], Any]) -> Any:
    return parse(Path(path))
