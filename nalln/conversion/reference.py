"""The torch model's own trace: every LIF's spikes captured under NIR node names."""

from __future__ import annotations

import torch
from torch import nn

from nalln.ir.reference import Trace
from nalln.models.naming import node_name
from nalln.models.neuron import LIF


@torch.no_grad()
def run_torch_model(model: nn.Module, x: torch.Tensor) -> Trace:
    """The torch model with every LIF's spikes captured (names as in the NIR export)."""
    T = model.num_steps
    spikes: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, LIF):

            def hook(_m, _a, out, key=node_name(name)):
                spikes[key] = out.reshape(T, -1, *out.shape[1:]) > 0

            handles.append(mod.register_forward_hook(hook))
    try:
        model.eval()
        outputs = model.forward_steps(x.float())
    finally:
        for h in handles:
            h.remove()
    return Trace(outputs.float(), spikes)
