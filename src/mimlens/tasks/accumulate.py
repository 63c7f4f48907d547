"""A base for metric accumulators: named float64 sums, merged by addition, divided only in ``compute()``."""

from __future__ import annotations

import torch

from mimlens import distributed


class SumAccumulator:
    """Holds named float64 sum tensors; subclasses add to them in ``update`` and divide in ``compute``."""

    def __init__(self, **shapes: tuple[int, ...]) -> None:
        self.sums = {name: torch.zeros(shape, dtype=torch.float64) for name, shape in shapes.items()}

    def add(self, name: str, value: torch.Tensor | float) -> None:
        self.sums[name] += torch.as_tensor(value, dtype=torch.float64).detach().cpu()

    def merge(self, other: SumAccumulator) -> SumAccumulator:
        for name, value in other.sums.items():
            self.sums[name] += value
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: value.clone() for name, value in self.sums.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.sums:
            self.sums[name] = state[name].to(torch.float64).clone()

    def all_reduce_(self) -> SumAccumulator:
        """Sum over torchrun processes in place with one all-reduce (a no-op in one process)."""
        distributed.all_reduce_sum_many_(list(self.sums.values()))
        return self
