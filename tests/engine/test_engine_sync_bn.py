"""Batch norm over processes: float32-accurate moments for half-precision input."""

import pytest
import torch
import torch.distributed as dist

from mimlens.engine import sync_bn
from mimlens.engine.sync_bn import ProcessBatchNorm


def _half_batch(seed=0):
    """(8, 3, 96, 96) fp16 values with mean 3 and std 2: 73,728 samples per channel, more than fp16's 65,504."""
    generator = torch.Generator().manual_seed(seed)
    return (3 + 2 * torch.randn(8, 3, 96, 96, generator=generator, dtype=torch.float64)).half()


def _reference(x):
    """Per-channel float64 mean and biased variance, and the normalised output."""
    x64 = x.double()
    mean = x64.mean((0, 2, 3))
    var = x64.var((0, 2, 3), unbiased=False)
    return mean, var, (x64 - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-5)


def test_half_input_gives_float32_moments_over_two_processes(monkeypatch):
    """Two processes with the same half batch: the all-reduce doubles every sum, the statistics stay the batch's."""
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(sync_bn, "all_reduce", lambda t: 2 * t)
    x = _half_batch()
    bn = ProcessBatchNorm(3, momentum=1.0).train()
    out = bn(x)
    mean, var, expected = _reference(x)
    assert torch.isfinite(bn.running_var).all()
    n = 2 * x.numel() // 3
    torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var.double(), var * n / (n - 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-2)
    assert out.double().std().item() == pytest.approx(1.0, abs=1e-3)
    assert out.dtype == torch.float16

