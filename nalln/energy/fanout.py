r"""Exact fan-out maps of linear layers: how many synaptic operations one input element causes.

NeuroBench counts the effective operations of a layer by running a copy whose nonzero weights
are 1 (bias 0) on the input with nonzeros set to 1 and summing the output. That sum is linear in
the binarised input :math:`m`, so

.. math::
    \mathrm{ops} = \sum_{o} (W_{\ne 0} * m)_o = \sum_{i} m_i \, F_i,\qquad
    F = \nabla_m \textstyle\sum_o (W_{\ne 0} * m)_o

where :math:`F_i` is the number of (output, nonzero weight) pairs input element :math:`i`
reaches: stride, padding (padded zeros reach nothing), dilation, groups and zero weights are
exact because :math:`F` comes from the layer's own forward function. :math:`F` does not depend
on the data, so it is computed once per layer (one backward pass in float64) and every batch
costs only a nonzero count and a dot product.
"""

from __future__ import annotations

import torch
from torch import nn

SYNAPTIC_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def forward_with(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return torch.nn.functional.linear(x, weight)
    if isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return layer._conv_forward(x, weight, None)  # honours padding_mode, stride, groups
    raise TypeError(f"no fan-out rule for {type(layer).__name__}")


@torch.no_grad()
def weight_mask(layer: nn.Module, dense: bool = False) -> torch.Tensor:
    """1 where a weight is nonzero (all ones when ``dense``), in float64."""
    w = layer.weight.detach().to("cpu", torch.float64)
    return torch.ones_like(w) if dense else (w != 0).to(torch.float64)


def fanout_map(layer: nn.Module, in_shape: tuple[int, ...], dense: bool = False) -> torch.Tensor:
    """``F`` of shape ``in_shape`` (one sample): synaptic operations per nonzero input element.

    With ``dense`` every weight counts (NeuroBench's "Dense" = all-ones weights and inputs).
    """
    mask = weight_mask(layer, dense)
    x = torch.zeros((1, *in_shape), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        y = forward_with(layer, x, mask)
        (grad,) = torch.autograd.grad(y.sum(), x)
    return grad[0].detach()
