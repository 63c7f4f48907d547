"""Process-group helpers for ``torchrun``: one code path for 1 process, gloo on CPU and NCCL on GPU.

Everything reads the standard torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); without
it the functions degrade to single-process no-ops, so library code never branches on "distributed".
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist

from mimlens.errors import MimlensError


def is_launched() -> bool:
    """True when started by torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str | torch.device | None = None) -> torch.device:
    """Initialise the default process group from the environment if launched; return this rank's device.

    Backend: NCCL when the device is CUDA, gloo otherwise. Safe to call twice.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise MimlensError(f"device {device!r} is not a torch device: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MimlensError(f"device {str(device)!r} was asked for, but this torch build sees no CUDA GPU: use cpu")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if is_launched() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(shutdown)  # one group per process, reused by every command the process runs
    return device


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op in one process). Returns the tensor."""
    if dist.is_initialized() and world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def collective_device() -> torch.device:
    """Where a tensor must be for a collective: this rank's GPU under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum_many_(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sum every tensor over ranks in place with one all-reduce of their float64 concatenation, on the
    collective device (no-op in one process). Returns the tensors."""
    if not tensors or not (dist.is_initialized() and world_size() > 1):
        return tensors
    flat = torch.cat([t.reshape(-1).to(collective_device(), torch.float64) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view(t.shape))
        offset += t.numel()
    return tensors


def barrier() -> None:
    if dist.is_initialized() and world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(dataset):
    """This rank's items of ``dataset``: indices ``rank, rank + world, …`` (the whole set in one process)."""
    if world_size() == 1:
        return dataset
    from torch.utils.data import Subset

    return Subset(dataset, range(rank(), len(dataset), world_size()))


def gather_sharded(local: list) -> list:
    """Per-item results of :func:`shard`'s items from every rank, in the dataset's order (one entry per item):
    what one process that evaluated the whole dataset would hold."""
    if world_size() == 1:
        return list(local)
    parts: list[list] = [[] for _ in range(world_size())]
    dist.all_gather_object(parts, list(local))
    total = sum(len(p) for p in parts)
    return [parts[i % len(parts)][i // len(parts)] for i in range(total)]
