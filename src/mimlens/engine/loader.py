"""Data order and augmentation randomness that depend only on (seed, epoch, index).

That makes a run reproducible across worker counts and process counts, and lets a resumed run start
part-way through an epoch at exactly the sample where the interrupted run stopped:

- :class:`EpochSampler` is a :class:`~torch.utils.data.DistributedSampler` (same shuffle as one process,
  interleaved over ranks) that can start at a given position and yields ``(epoch, index)`` keys, so the
  epoch reaches persistent workers without any shared state;
- :class:`SeededTransform` runs the (random) transform of one sample under a torch RNG seeded from
  ``(seed, epoch, index)``, leaving the process's own RNG untouched.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mimlens.signals import ignore_in_worker


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed mixed from the three integers (NumPy's SeedSequence)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class SeededTransform(Dataset):
    """``transform(dataset[index])`` with torch's CPU RNG seeded by ``sample_seed(seed, epoch, index)``.

    Indexed by ``(epoch, index)`` keys (from :class:`EpochSampler`). The transform may use any torch
    random op (torchvision transforms, SimMIM masks); it must not use Python's or NumPy's global RNG.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any], seed: int = 0):
        self.dataset = dataset
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        # the CPU generator directly: torch.manual_seed also queues device seeding, ~1 ms a call
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(sample_seed(self.seed, epoch, index))
        try:
            return self.transform(self.dataset[index])
        finally:
            generator.set_state(state)


class EpochSampler(DistributedSampler):
    """DistributedSampler that yields ``(epoch, index)`` and can start an epoch at sample ``start``."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip this rank's first ``start`` samples of it."""
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, i) for i in itertools.islice(super().__iter__(), self.start, None))

    def __len__(self) -> int:
        return self.num_samples - self.start


def build_loader(
    dataset: Dataset,
    transform: Callable[[Any], Any],
    *,
    batch_size: int,
    num_replicas: int,
    rank: int,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> tuple[DataLoader, EpochSampler]:
    """A loader of per-rank micro-batches; the last incomplete batch of an epoch is dropped."""
    data = SeededTransform(dataset, transform, seed)
    sampler = EpochSampler(data, num_replicas=num_replicas, rank=rank, seed=seed)
    loader = DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=num_workers > 0,
        worker_init_fn=ignore_in_worker,  # a stop signal is the training process's to handle
        # its own generator, so creating an iterator never draws from the global RNG (exact resume)
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, sampler
