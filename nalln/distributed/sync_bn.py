r"""BatchNorm whose training statistics are those of the global batch, on gloo (CPU) and NCCL.

PyTorch's ``nn.SyncBatchNorm`` refuses CPU tensors ("expected input tensor to be on GPU"), so
the CPU path of ``nalln train --sync-bn`` (and the CI test that 2 processes equal 1) would have
nothing to run. This is the same algebra with one autograd-aware all-reduce per layer and call:
per channel, every rank sums :math:`\sum x`, :math:`\sum x^2` and the count :math:`n`; then
:math:`\mu = \sum x / n`, :math:`\sigma^2 = \sum x^2 / n - \mu^2` (biased, for normalising) and
the running variance gets the unbiased :math:`\sigma^2 n / (n - 1)`, as ``nn.BatchNorm`` does.
The gradient flows back through the all-reduce, so each
rank's inputs receive the gradient of the global-batch statistics. The modules subclass
``BatchNorm1d``/``BatchNorm2d``: state dicts, folding and the fast path are unchanged.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, forward and backward: each rank's input feeds every rank's output, so
    its gradient is the sum of every rank's output gradient. (``torch.distributed.nn``'s
    autograd all-reduce does the same and is deprecated in this torch.)"""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        g = grad.clone()
        dist.all_reduce(g)
        return g


def _global_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    dims = [d for d in range(x.dim()) if d != 1]
    c = x.shape[1]
    count = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
    local = torch.cat([x.sum(dims), (x * x).sum(dims), count])
    total = _AllReduceSum.apply(local)
    n = total[-1]
    mean = total[:c] / n
    var = (total[c : 2 * c] / n - mean * mean).clamp_min(0)
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.mul_(1 - m).add_(m * mean.detach())
        bn.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp_min(1))
    shape = [1, c] + [1] * (x.dim() - 2)
    y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y


def _syncing(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    return (
        bn.training
        and bn.track_running_stats
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() > 1
    )


class GlobalBatchNorm1d(nn.BatchNorm1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _global_batch_norm(self, x) if _syncing(self) else super().forward(x)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _global_batch_norm(self, x) if _syncing(self) else super().forward(x)


def convert_global_batch_norm(model: nn.Module) -> int:
    """Swap every BatchNorm1d/2d of ``model`` in place for its global twin (same parameters and
    buffers); returns how many were swapped."""
    swapped = 0
    for module in model.modules():
        for cls, glob in ((nn.BatchNorm2d, GlobalBatchNorm2d), (nn.BatchNorm1d, GlobalBatchNorm1d)):
            if type(module) is cls:
                module.__class__ = glob
                swapped += 1
    return swapped
