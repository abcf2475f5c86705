"""BatchNorm folding: the one implementation the fast path, the exporter and QAT share.

An eval-mode BatchNorm after a conv/linear layer is an affine map per output channel,
:math:`y = s (W x + b - \\mu) + \\beta` with :math:`s = \\gamma / \\sqrt{\\sigma^2 + \\epsilon}`, so
it folds into the layer as :math:`W' = s W`, :math:`b' = s (b - \\mu) + \\beta`. The maths runs in
float64 and the result is float32, so every user of the folded values sees the same numbers.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def fold_batchnorm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module | None
) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of a conv/linear layer with the eval-mode BatchNorm after it folded in."""
    w = weight.detach().double()
    b = bias.detach().double() if bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
    if bn is not None:
        s = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        w = w * s.view(-1, *([1] * (w.dim() - 1)))
        b = (b - bn.running_mean.double()) * s + bn.bias.detach().double()
    return w.float().cpu().numpy(), b.float().cpu().numpy()


@torch.no_grad()
def fused_layer(layer: nn.Conv2d | nn.Linear, bn: nn.Module | None) -> nn.Module:
    """A copy of ``layer`` (conv or linear) with the eval-mode BatchNorm ``bn`` folded in."""
    fused = copy.deepcopy(layer)
    if bn is None:
        return fused
    w, b = fold_batchnorm(layer.weight, layer.bias, bn)
    dev, dt = layer.weight.device, layer.weight.dtype
    fused.weight.copy_(torch.from_numpy(w).to(dev, dt))
    fused.bias = nn.Parameter(torch.from_numpy(b).to(dev, dt))
    return fused
