"""Image folders are listed once (cached, invalidated by the folder's listing, shared by torchrun processes), held
in arrays, and their unreadable files are reported once, summed over DataLoader workers and processes."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mimlens.data import listing
from mimlens.data.folders import ImageFiles
from mimlens.data.listing import PackedStrings, cache_dir, cache_file

HERE = Path(__file__).parent


def _png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIMLENS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def counted(monkeypatch):
    """The folders :func:`mimlens.data.listing.list_folder` lists, in order."""
    calls = []
    original = listing.list_folder

    def list_folder(root, threads=16):
        calls.append(Path(root))
        return original(root, threads)

    monkeypatch.setattr(listing, "list_folder", list_folder)
    return calls


def test_cache_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MIMLENS_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("MIMLENS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "mimlens"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path("~/.cache/mimlens").expanduser()


def test_listing_is_cached_and_listed_again_when_a_class_folder_changes(tmp_path, cache, counted):
    root = tmp_path / "tree"
    for name in ("cat/a.png", "cat/b.png", "dog/c.png", "dog/deep/d.png"):
        _png(root / name)
    first = ImageFiles(root)
    assert list(first.files) == ["cat/a.png", "cat/b.png", "dog/c.png", "dog/deep/d.png"]
    assert counted == [root.absolute()] and cache_file(root.absolute()).is_file()
    again = ImageFiles(root)
    assert counted == [root.absolute()]  # the cache was read
    assert list(again.files) == list(first.files) and again.labels.tolist() == [0, 0, 1, 1]
    _png(root / "dog" / "e.png")  # a file added to a class folder changes that folder's mtime
    added = ImageFiles(root)
    assert len(counted) == 2 and list(added.files)[2:] == ["dog/c.png", "dog/e.png", "dog/deep/d.png"]
    (root / "dog" / "deep" / "d.png").unlink()  # a sub-folder's change is seen too
    assert list(ImageFiles(root).files) == ["cat/a.png", "cat/b.png", "dog/c.png", "dog/e.png"]
    (root / "bird").mkdir()  # a new class folder changes the root's mtime
    _png(root / "bird" / "f.png")
    grown = ImageFiles(root)
    assert len(counted) == 4 and grown.classes == ["bird", "cat", "dog"] and grown.labels.tolist() == [0, 1, 1, 2, 2]


def test_an_unreadable_cache_file_is_replaced(tmp_path, cache, counted):
    _png(tmp_path / "flat" / "a.png")
    cache_file((tmp_path / "flat").absolute()).parent.mkdir(parents=True)
    cache_file((tmp_path / "flat").absolute()).write_bytes(b"not a listing")
    data = ImageFiles(tmp_path / "flat")
    assert list(data.files) == ["a.png"] and data.labels.tolist() == [-1] and len(counted) == 1
    ImageFiles(tmp_path / "flat")
    assert len(counted) == 1


def test_samples_are_arrays_not_python_lists(tmp_path, cache):
    for k in range(50):
        _png(tmp_path / "tree" / f"c{k % 3}" / f"{k:03d}.png")
    data = ImageFiles(tmp_path / "tree")
    assert isinstance(data.files, PackedStrings) and data.files.buffer.dtype == np.uint8
    assert data.labels.dtype == np.int64 and data.labels.shape == (50,)
    assert not any(isinstance(value, list | tuple) and len(value) == len(data) for value in vars(data).values())
    assert data.path(17) == str(tmp_path / "tree" / "c1" / "001.png")  # after the 17 files of c0
    assert np.bincount(data.labels).tolist() == [17, 17, 16]
    copy = pickle.loads(pickle.dumps(data))  # what a spawned DataLoader worker receives
    assert list(copy.files) == list(data.files) and copy.skip_log.folder == data.skip_log.folder


def test_packed_strings_round_trip_any_file_name():
    names = ["a.png", "", "ünïcödé/ß.JPEG", "with space/x.jpg", os.fsdecode(b"bad-\xff.png")]
    packed = PackedStrings.pack(names)
    assert list(packed) == names and len(packed) == 5


def _tree_with_damaged_files(root):
    """16 files, a/00-07 and b/08-15; 00, 04, 09, 12 and 13 damaged. Under 2 processes (DistributedSampler, no
    shuffle) × 2 workers (batches of 2, alternating), each (process, worker) pair meets at least one; 13 is met by
    both processes (process 0 falls through 12 to it)."""
    damaged = {0, 4, 9, 12, 13}
    for k in range(16):
        path = root / ("a" if k < 8 else "b") / f"{k:02d}.png"
        _png(path, 10 * k)
        if k in damaged:
            path.write_bytes(b"not an image")
    return damaged


@pytest.mark.slow
def test_two_processes_share_one_listing_and_report_the_damaged_files_once(tmp_path, cache):
    """torchrun, 2 processes × 2 DataLoader workers: rank 0 alone lists the folder, both read the same files, and
    the 5 damaged files are counted once each in the one line rank 0 prints."""
    damaged = _tree_with_damaged_files(tmp_path / "tree")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(HERE / "listing_ddp_worker.py"), str(tmp_path / "tree"), str(tmp_path / "out")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["listed"] for r in records] == [1, 0]  # rank 0 listed, rank 1 read the cache
    assert records[0]["files"] == records[1]["files"] and len(records[0]["files"]) == 16
    met = [set(r["met"]) for r in records]
    assert met[0] & met[1] == {13} and met[0] | met[1] == damaged  # both processes met file 13
    lines = [line for line in result.stdout.splitlines() if "unreadable" in line]
    tree = tmp_path / "tree"
    assert lines == [f"skipped 5 unreadable file(s) in {tree}: a/00.png (not an image), a/04.png (not an image), "
                     "b/09.png (not an image), b/12.png (not an image), b/13.png (not an image)"]
