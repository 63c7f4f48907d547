"""The file listing of an image folder: made once (threads over the class folders, ``os.scandir``), cached in a
file, and shared by the processes of a run.

The cache lives in ``$MIMLENS_CACHE``, else ``$XDG_CACHE_HOME/mimlens``, else ``~/.cache/mimlens``
(``listings/<sha256 of the folder's absolute path>.npz``). It holds the mtime of every directory it listed (the
folder, its class folders and their sub-folders) and is used only while each of them still has that mtime:
adding, removing or renaming a file changes its folder's mtime, so a changed folder is listed again. Under
``torchrun`` rank 0 lists and writes the file (atomically) while the other processes wait at a barrier, then
read it.

Names are held in :class:`PackedStrings` (one byte buffer and int64 offsets) and labels in int64 arrays: no
Python object per file, so DataLoader workers that read them do not copy the pages they sit in.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS

from mimlens.errors import MimlensError

#: The file name extensions of an image (torchvision's, as its ImageFolder uses them), compared in lower case.
IMAGE_EXTENSIONS = IMG_EXTENSIONS
CACHE_ENV = "MIMLENS_CACHE"
_VERSION = 1


def cache_dir() -> Path:
    """Where mimlens caches what it can rebuild: ``$MIMLENS_CACHE``, else ``$XDG_CACHE_HOME/mimlens``, else
    ``~/.cache/mimlens``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "mimlens"


class PackedStrings:
    """A sequence of strings held as one uint8 buffer (``os.fsencode``) and ``len + 1`` int64 offsets."""

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray):
        self.buffer, self.offsets = buffer, offsets

    @classmethod
    def pack(cls, strings: Sequence[str]) -> PackedStrings:
        encoded = [os.fsencode(s) for s in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        return os.fsdecode(self.buffer[self.offsets[index] : self.offsets[index + 1]].tobytes())

    def __iter__(self):
        return (self[i] for i in range(len(self)))


@dataclass(frozen=True)
class Listing:
    """The image files under a folder: ``paths`` relative to it, ``folder`` the index of each file's class
    folder in ``folders`` (-1 for the files of a flat folder, which has no class folder), ``dirs`` every
    directory listed (relative; ``""`` is the folder) with its ``mtimes`` (ns) when it was listed."""

    folders: list[str]
    paths: PackedStrings
    folder: np.ndarray
    dirs: list[str]
    mtimes: np.ndarray

    def current(self, root: Path) -> bool:
        """Whether every listed directory under ``root`` still has its recorded mtime."""
        try:
            return all(os.stat(root / d).st_mtime_ns == int(m) for d, m in zip(self.dirs, self.mtimes, strict=True))
        except OSError:
            return False


def _is_image(entry: os.DirEntry) -> bool:
    return entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file()


def _walk(root: Path, rel: str) -> tuple[list[str], list[tuple[str, int]]]:
    """The image files under ``root/rel`` (relative to ``root``, sorted, a folder's files before its
    sub-folders') and every directory met with its mtime, read before its entries."""
    mtime = os.stat(root / rel).st_mtime_ns
    with os.scandir(root / rel) as entries:
        entries = sorted(entries, key=lambda e: e.name)
    files = [f"{rel}/{e.name}" for e in entries if _is_image(e)]
    dirs = [(rel, mtime)]
    for sub in (e for e in entries if e.is_dir()):
        more, seen = _walk(root, f"{rel}/{sub.name}")
        files += more
        dirs += seen
    return files, dirs


def list_folder(root: Path, threads: int = 16) -> Listing:
    """List ``root``: a flat folder (image files at its top level) or one sub-folder per class, the class
    folders walked in parallel threads."""
    mtime = os.stat(root).st_mtime_ns
    with os.scandir(root) as entries:
        entries = sorted(entries, key=lambda e: e.name)
    flat = [e.name for e in entries if _is_image(e)]
    if flat:
        return Listing([], PackedStrings.pack(flat), np.full(len(flat), -1, dtype=np.int64), [""],
                       np.array([mtime], dtype=np.int64))
    folders = [e.name for e in entries if e.is_dir()]
    with ThreadPoolExecutor(max(1, min(threads, len(folders)))) as pool:
        walked = list(pool.map(lambda name: _walk(root, name), folders))
    paths = [p for files, _ in walked for p in files]
    folder = np.repeat(np.arange(len(folders), dtype=np.int64), [len(files) for files, _ in walked])
    dirs = [("", mtime)] + [d for _, seen in walked for d in seen]
    return Listing(folders, PackedStrings.pack(paths), folder, [d for d, _ in dirs],
                   np.array([m for _, m in dirs], dtype=np.int64))


def cache_file(root: Path) -> Path:
    return cache_dir() / "listings" / f"{hashlib.sha256(os.fsencode(root)).hexdigest()}.npz"


def _save(listing: Listing, root: Path, path: Path) -> None:
    from mimlens.io import save_bytes

    folders, dirs = PackedStrings.pack(listing.folders), PackedStrings.pack(listing.dirs)
    buffer = io.BytesIO()
    np.savez(buffer, version=np.int64(_VERSION), root=np.frombuffer(os.fsencode(root), dtype=np.uint8),
             paths=listing.paths.buffer, path_offsets=listing.paths.offsets, folder=listing.folder,
             folders=folders.buffer, folder_offsets=folders.offsets, dirs=dirs.buffer, dir_offsets=dirs.offsets,
             mtimes=listing.mtimes)
    save_bytes(buffer.getvalue(), path)


def _load(root: Path, path: Path) -> Listing | None:
    """The listing cached in ``path`` for ``root``, or None when there is none, it is unreadable, another
    version's or another folder's."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if int(f["version"]) != _VERSION or f["root"].tobytes() != os.fsencode(root):
                return None
            return Listing(list(PackedStrings(f["folders"], f["folder_offsets"])),
                           PackedStrings(f["paths"], f["path_offsets"]), f["folder"],
                           list(PackedStrings(f["dirs"], f["dir_offsets"])), f["mtimes"])
    except (OSError, ValueError, KeyError, EOFError):
        return None


def _cached_or_listed(root: Path) -> Listing:
    path = cache_file(root)
    listing = _load(root, path)
    if listing is not None and listing.current(root):
        return listing
    listing = list_folder(root)
    try:
        _save(listing, root, path)
    except OSError as err:
        raise MimlensError(f"cannot write the listing cache {path} ({err.strerror}): set {CACHE_ENV} to a "
                           "writable folder") from None
    return listing


def folder_listing(root: str | Path) -> Listing:
    """The listing of ``root`` from the cache while it is current, else listed and cached. Under ``torchrun``
    every process must call it: rank 0 lists and writes, the others read after a barrier."""
    from mimlens import distributed

    root = Path(root).absolute()
    if distributed.world_size() == 1:
        return _cached_or_listed(root)
    listing = _cached_or_listed(root) if distributed.is_main() else None
    distributed.barrier()
    return listing or _cached_or_listed(root)
