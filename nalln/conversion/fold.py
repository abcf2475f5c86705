r"""Folding for deployment: BatchNorm into the synapse before it, and static SE gates.

BatchNorm in eval mode is an affine map per channel,
:math:`y = \gamma (x - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta`, so a conv or linear layer
followed by it is one layer with weights :math:`W \cdot s` and bias :math:`(b - \mu) s + \beta`,
:math:`s = \gamma / \sqrt{\sigma^2 + \epsilon}`.

A static SE gate replaces the input-dependent gate :math:`g(x)` of each Squeeze-and-Excitation
block by its mean over calibration images and time steps, :math:`\bar g_c`. Since the gate
multiplies the pointwise current per channel, it folds into that conv's weights and bias.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from nalln.errors import NallnError
from nalln.models.blocks import se_blocks


class StaticGate(nn.Module):
    """An SE block with its gate frozen to per-channel constants (``x * scale``)."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().float().clone())

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale.expand(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, *([1] * (x.dim() - 2)))


@torch.no_grad()
def mean_gates(
    model: nn.Module,
    inputs: torch.Tensor,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Mean SE gate per channel of every SE block over ``inputs`` (normalised) and all steps."""
    blocks = se_blocks(model)
    if not blocks:
        return {}
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []
    for name, block in blocks.items():

        def hook(mod, args, _out, name=name):
            g = mod.gate(args[0])  # [T*B, C]
            sums[name] = sums.get(name, 0) + g.double().sum(0)
            counts[name] = counts.get(name, 0) + g.shape[0]

        handles.append(block.se.register_forward_hook(hook))
    try:
        model.eval()
        starts = range(0, len(inputs), batch_size)
        for i in tqdm(starts, desc="calibrating SE gates", disable=not progress, leave=False):
            model(inputs[i : i + batch_size])
    finally:
        for h in handles:
            h.remove()
    return {n: (sums[n] / counts[n]).float().numpy() for n in blocks}


def static_se_model(model: nn.Module, gates: dict[str, np.ndarray]) -> nn.Module:
    """A copy of ``model`` whose SE gates are the constants ``gates`` (the static-SE reference)."""
    blocks = se_blocks(model)
    if set(blocks) != set(gates):
        raise NallnError(
            f"static SE gates given for {sorted(gates)} but the model has SE blocks "
            f"{sorted(blocks)}"
        )
    static = copy.deepcopy(model)
    for name, block in se_blocks(static).items():
        block.se = StaticGate(torch.as_tensor(gates[name]))
    return static.eval()
