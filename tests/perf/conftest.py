"""Helpers for the performance-path tests: small models whose every layer actually spikes."""

from __future__ import annotations

import pytest
import torch

import nalln


def calibrated(name: str = "neurallnet", size: int = 32, seed: int = 0, **cfg) -> torch.nn.Module:
    """A fresh model with BatchNorm statistics from one random batch, so every layer fires
    (a freshly initialised network is silent beyond its first layers and would make
    equivalence checks trivial)."""
    torch.manual_seed(seed)
    model = nalln.create(name, image_size=size, **cfg)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, size, size))
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


def spike_rates(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    rates: dict[str, float] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, n=n: rates.__setitem__(n, float(o.mean())))
        for n, m in model.spiking_layers().items()
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return rates


@pytest.fixture(scope="session")
def make_model():
    """``make_model(name, size, seed, **config)`` -> a calibrated model (see ``calibrated``)."""
    return calibrated


@pytest.fixture(scope="session")
def rates_of():
    return spike_rates


@pytest.fixture(scope="module")
def active_model() -> torch.nn.Module:
    return calibrated("neurallnet", 64, width_multiplier=0.5)
