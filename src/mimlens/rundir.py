"""The folder a command writes (``--out``), checked before anything is written and without torch.

A run directory's kind is read from its ``config.yaml``: the first of :data:`KINDS` whose key is a top-level key
(a comparison's config also has an ``analysis`` section, so ``items`` is asked first). :func:`check_out` is the one
check every command that writes a run directory makes: it refuses a file, a folder it cannot write, and a folder
that holds a different kind of run or a demo; a folder of the same kind is rerun (resumed, where the command
resumes).
"""

from __future__ import annotations

import os
from pathlib import Path

from mimlens.errors import MimlensError

# kind: (top-level key of config.yaml, how a message names it)
KINDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "a demo"),
    "study": ("study", "a study"),
    "compare": ("items", "a comparison"),
    "finetune": ("task", "a fine-tuning run"),
    "pretrain": ("objective", "a pre-training run"),
    "probe": ("probe", "a probe run"),
    "masks": ("masks", "a masks run"),
    "analyze": ("analysis", "an analysis"),
}


def run_kind(folder: Path) -> str | None:
    """The kind of run ``folder/config.yaml`` describes; ``"other"`` for a config of none, None without one."""
    from mimlens.config import load_yaml

    config = folder / "config.yaml"
    if not config.is_file():
        return None
    return config_kind(load_yaml(config))


def config_kind(cfg: dict) -> str:
    """The kind of run a ``config.yaml`` mapping describes (the first :data:`KINDS` key it has), else ``"other"``."""
    return next((kind for kind, (key, _) in KINDS.items() if key in cfg), "other")


def check_out(out: Path, kind: str) -> None:
    """Refuse to write the ``kind`` run directory ``out`` (a key of :data:`KINDS`) where it would overwrite
    something else or could not be written; one line naming the folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MimlensError(f"--out {out} is a file, not a folder: choose another --out")
    found = run_kind(out) if out.is_dir() else None
    if found is not None and found != kind:
        what = KINDS[found][1] if found in KINDS else "a config.yaml of no mimlens run"
        raise MimlensError(f"{out} holds {what} ({out / 'config.yaml'}); mimlens {kind} would overwrite it: "
                           "choose another --out")
    check_writable(out)


def check_writable(out: Path) -> None:
    """Refuse a folder that cannot be created or written: the nearest existing folder on its path must be
    writable (``os.access`` also answers for a read-only file system, as root too)."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise MimlensError(f"cannot write {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MimlensError(f"cannot write {out}: {existing} is not writable (read-only file system or no "
                           "permission)")
