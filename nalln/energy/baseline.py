"""The conventional twin of a spiking model: same layers and weights, ReLU instead of LIF, T = 1.

The energy comparison needs "the same network as an ANN". Copying the model, setting its time
steps to 1 and swapping every LIF module for ``nn.ReLU`` keeps every synaptic layer, its shape
and its name, so the same counter counts both and layers pair up by name. The twin is not a
trained ANN: its dense MAC counts are exact, but its activation sparsity (used only for the
zero-skipping variant) is what these weights give under ReLU, not what a trained ANN would give.
"""

from __future__ import annotations

import copy
import dataclasses

from torch import nn

from nalln.loihi.onchip_se import OnchipSE
from nalln.models.blocks import SqueezeExcite
from nalln.models.neuron import LIF


def replace_neurons(model: nn.Module) -> int:
    """Swap every LIF module for ``nn.ReLU`` in place; returns how many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LIF):
                setattr(parent, child_name, nn.ReLU())
                swapped += 1
    return swapped


def conventional_se(model: nn.Module) -> int:
    """Swap every on-chip SE gate (``--se onchip`` runs) for the float ``SqueezeExcite`` with
    the same fc1 / fc2 in place, so the twin computes (and is charged for) its SE blocks as a
    conventional network does; returns how many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, OnchipSE):
                se = SqueezeExcite(child.fc1.in_features)
                se.fc1, se.fc2 = child.fc1, child.fc2
                setattr(parent, child_name, se)
                swapped += 1
    return swapped


def relu_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` as a conventional network: one step, ReLU neurons, float SE gates,
    eval mode."""
    ann = copy.deepcopy(model)
    conventional_se(ann)
    cfg = getattr(ann, "config", None)
    if dataclasses.is_dataclass(cfg) and hasattr(cfg, "num_steps"):
        ann.config = dataclasses.replace(cfg, num_steps=1)
    for m in ann.modules():
        is_property = isinstance(getattr(type(m), "num_steps", None), property)
        if not is_property and isinstance(getattr(m, "num_steps", None), int):
            m.num_steps = 1
    replace_neurons(ann)
    return ann.eval()
