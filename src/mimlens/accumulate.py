"""The base of every accumulator — the analyses' (attention statistics, minibatch CKA) and the metrics' (top-k
accuracy, depth errors, tracking success, ridge sums): float64 sums that ``update`` adds to, ``merge`` and
``all_reduce_`` add across copies and torchrun processes, and ``compute`` divides once.

That gives streaming (memory flat in the number of items), distributed runs (one all-reduce of the sums) and exact
tests (one batch of n equals n batches of one).
"""

from __future__ import annotations

import torch

from mimlens import distributed


class Accumulator:
    """Float64 sums over items. Subclasses add to them in ``update``, divide in ``compute`` and list them, in a
    fixed order, in :meth:`sum_tensors`; :meth:`check_compatible` refuses another whose sums mean something else."""

    def update(self, *args, **kwargs) -> None:
        raise NotImplementedError

    def compute(self):
        raise NotImplementedError

    def sum_tensors(self) -> list[torch.Tensor]:
        """Every sum, in an order that is the same in every copy with the same set-up."""
        raise NotImplementedError

    def check_compatible(self, other: Accumulator) -> None:
        """Raise a :class:`MimlensError` when ``other``'s sums cannot be added to these (default: accepts)."""

    def merge(self, other: Accumulator) -> Accumulator:
        """Add another accumulator's sums into this one."""
        self.check_compatible(other)
        for mine, theirs in zip(self.sum_tensors(), other.sum_tensors(), strict=True):
            mine += theirs.to(mine.device)
        return self

    def all_reduce_(self) -> Accumulator:
        """Sum over torchrun processes in place with one all-reduce (a no-op in one process)."""
        distributed.all_reduce_sum_many_(self.sum_tensors())
        return self


class SumAccumulator(Accumulator):
    """Holds named float64 sum tensors (``sums``); subclasses add to them in ``update`` and divide in ``compute``."""

    def __init__(self, **shapes: tuple[int, ...]) -> None:
        self.sums = {name: torch.zeros(shape, dtype=torch.float64) for name, shape in shapes.items()}

    def add(self, name: str, value: torch.Tensor | float) -> None:
        self.sums[name] += torch.as_tensor(value, dtype=torch.float64).detach().cpu()

    def sum_tensors(self) -> list[torch.Tensor]:
        return list(self.sums.values())

    def check_compatible(self, other: Accumulator) -> None:
        from mimlens.errors import MimlensError

        theirs = getattr(other, "sums", {})
        if list(theirs) != list(self.sums) or any(theirs[k].shape != v.shape for k, v in self.sums.items()):
            raise MimlensError(f"cannot merge {type(other).__name__} sums into {type(self).__name__}: the sums "
                               f"{sorted(theirs)} differ from {sorted(self.sums)} in names or shapes")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: value.clone() for name, value in self.sums.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.sums:
            self.sums[name] = state[name].to(torch.float64).clone()
