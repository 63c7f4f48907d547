"""Atomic writes for everything a run directory holds (a crash never leaves a half-written file), and strict JSON."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: str | os.PathLike, write) -> Path:
    """Write to a temporary file beside ``path``, fsync, then ``os.replace``; permissions follow the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temporary file and ``os.replace``."""
    import torch  # here, so that the other writers (and mimlens.config) do not import torch

    return _atomic(path, lambda f: torch.save(obj, f))


def finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by None, for strict JSON (nested mappings and lists too)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    """Pretty JSON, atomically."""
    return _atomic(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def read_json(path: str | os.PathLike, missing: str = "") -> Any:
    """The JSON document in ``path``; one line naming the file when it is missing (with the hint ``missing``)
    or not valid JSON."""
    from mimlens.errors import MimlensError

    path = Path(path)
    if not path.is_file():
        raise MimlensError(f"{path} is missing" + (f": {missing}" if missing else ""))
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MimlensError(f"{path} is not valid JSON: {err}") from None


def save_text(text: str, path: str | os.PathLike) -> Path:
    return _atomic(path, lambda f: f.write(text.encode()))


def save_bytes(data: bytes, path: str | os.PathLike) -> Path:
    return _atomic(path, lambda f: f.write(data))
