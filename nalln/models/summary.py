"""Parameter counts and a per-layer table, from one forward pass with hooks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_LEAF_TYPES = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def summarise(model: nn.Module) -> dict[str, Any]:
    """Trainable parameters, FP32 bytes and one row per layer (output shape per time step)."""
    from nalln.models.neuron import LIF

    cfg = getattr(model, "config", None)
    size = getattr(cfg, "image_size", 224)
    channels = getattr(cfg, "in_channels", 3)
    steps = getattr(cfg, "num_steps", 1)
    rows: list[dict[str, Any]] = []
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, (*_LEAF_TYPES, LIF)):

            def hook(m, _inp, out, name=name):
                shape = list(out.shape)
                if shape and shape[0] in (1, steps):  # batch of 1, or time-folded (T x 1)
                    shape = shape[1:]
                rows.append(
                    {
                        "name": name,
                        "type": m.__class__.__name__,
                        "output_shape": shape,
                        "parameters": sum(p.numel() for p in m.parameters(recurse=False)),
                    }
                )

            hooks.append(mod.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, channels, size, size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    n = count_parameters(model)
    return {
        "parameters": n,
        "fp32_bytes": n * 4,
        "input_shape": [1, channels, size, size],
        "num_steps": steps,
        "layers": rows,
    }
