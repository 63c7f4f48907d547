"""Batch normalisation synchronised over ``torchrun`` processes on CPU (gloo).

PyTorch's :class:`~torch.nn.SyncBatchNorm` runs on GPUs only, so on CPU each process would normalise its own
micro-batch and a 2-process run would train another model than a 1-process run of the same global batch.
:class:`ProcessBatchNorm` all-reduces the per-channel count, sum and sum of squares with the differentiable
``torch.distributed.nn.functional.all_reduce`` and normalises with the statistics of the whole batch across
processes, like ``SyncBatchNorm``: the running statistics take the unbiased variance over all processes'
samples, so every process keeps the same buffers. In eval mode, or in one process, it is plain batch norm.
The moments are summed in float32 whatever the input's dtype (an fp16 count or sum of squares overflows at
65504), and the output has the input's dtype.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce


class ProcessBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over (N, C, *) inputs whose batch statistics are summed over all processes."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of 2 or more dimensions, got {input.dim()}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        values = input.float()
        count = torch.tensor(float(input.numel() // input.shape[1]), dtype=torch.float32, device=input.device)
        moments = torch.cat([count.view(1), values.sum(dims), (values * values).sum(dims)])
        moments = all_reduce(moments)
        channels = input.shape[1]
        n, total, squares = moments[0], moments[1:1 + channels], moments[1 + channels:]
        mean = total / n
        var = (squares / n - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        shape = [1, channels] + [1] * (input.dim() - 2)
        out = (values - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.float().view(shape) + self.bias.float().view(shape)
        return out.to(input.dtype)


def convert_process_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d in ``module`` by :class:`ProcessBatchNorm` (same state, in place)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, ProcessBatchNorm):
        converted = ProcessBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                     module.track_running_stats)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        for name, param in module.named_parameters(recurse=False):
            getattr(converted, name).requires_grad_(param.requires_grad)
        return converted
    for name, child in module.named_children():
        setattr(module, name, convert_process_batchnorm(child))
    return module
