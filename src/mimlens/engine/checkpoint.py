"""Resumable training state: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and plain Python values (no pickled objects): the model, optimizer,
scheduler and grad-scaler states, the step/epoch counters, the data position, every rank's RNG states
(torch, CUDA, NumPy, Python) and the resolved config as a plain dict.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mimlens.errors import MimlensError
from mimlens.io import save_torch


def rng_state() -> dict[str, Any]:
    """This process's RNG states in a ``weights_only``-loadable form."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), NumPy and Python's global RNGs."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Atomic write (temporary file + ``os.replace``): an interrupted save keeps the previous checkpoint."""
    return save_torch(state, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MimlensError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise MimlensError(f"checkpoint {path} cannot be read as a mimlens training checkpoint: {err}") from None
    missing = {"model", "optimizer", "scheduler", "step", "rng", "config"} - set(state)
    if missing:
        raise MimlensError(f"checkpoint {path} lacks {sorted(missing)}: not a mimlens training checkpoint")
    return state
