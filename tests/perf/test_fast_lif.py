"""The fused and in-place LIF kernels against snnTorch's Leaky (the reference neuron)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from nalln.errors import NallnError
from nalln.models.fast_lif import (
    FusedLIF,
    lif_backend,
    lif_fused,
    lif_inference,
    set_lif_backend,
)
from nalln.models.neuron import LIF, LIFParameters, lif_sequence

PARAMS = [
    LIFParameters(),  # the paper's tau = 2 (exact power-of-two decay)
    LIFParameters(tau=3.0, v_th=0.8, alpha=3.0),  # inexact decay, other threshold and surrogate
]


def _current(steps: int = 4, batch: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(steps * batch, 6, 9, 9, generator=g) * 1.5


@pytest.mark.parametrize("p", PARAMS)
def test_fused_forward_spikes_identical_and_gradients_match(p: LIFParameters) -> None:
    x = _current()
    x_ref = x.clone().requires_grad_()
    x_fast = x.clone().requires_grad_()
    s_ref = LIF(4, p)(x_ref)
    s_fast = lif_fused(x_fast, 4, p)
    assert 0.05 < float(s_ref.detach().mean()) < 0.6  # the test exercises both spikes and resets
    assert torch.equal(s_ref, s_fast)
    w = torch.randn_like(s_ref)
    (s_ref * w).sum().backward()
    (s_fast * w).sum().backward()
    assert x_ref.grad.abs().max() > 0
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=1e-6, atol=1e-7)


def test_fused_matches_pure_step_function() -> None:
    p = LIFParameters()
    x = _current(steps=5, batch=2)
    expected = lif_sequence(x.view(5, 2, 6, 9, 9), p).reshape(x.shape)
    assert torch.equal(lif_fused(x, 5, p), expected)


@pytest.mark.parametrize("p", PARAMS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_kernel_identical(p: LIFParameters, channels_last: bool) -> None:
    x = _current()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = LIF(4, p)(x)
    got = lif_inference(x.clone(), 4, p)
    assert torch.equal(got, expected)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("p", PARAMS)
def test_inference_kernel_constant_input_equals_repeated(p: LIFParameters) -> None:
    x = _current(steps=1, batch=3)
    kept = x.clone()
    expected = LIF(4, p)(x.repeat(4, 1, 1, 1))
    assert torch.equal(lif_inference(x, 4, p, constant=True), expected)
    assert torch.equal(x, kept)  # the constant input is left unchanged


def test_set_lif_backend_swaps_and_keeps_state(make_model) -> None:
    model = make_model("neurallnet", 32, width_multiplier=0.25, head_hidden=16)
    keys = list(model.state_dict())
    assert lif_backend(model) == "snntorch"
    set_lif_backend(model, "fused")
    assert lif_backend(model) == "fused"
    assert all(isinstance(m, FusedLIF) for m in model.spiking_layers().values())
    assert list(model.state_dict()) == keys  # checkpoints load into either
    set_lif_backend(model, "snntorch")
    assert lif_backend(model) == "snntorch"
    with pytest.raises(NallnError, match="unknown LIF backend"):
        set_lif_backend(model, "cuda-magic")


@pytest.mark.parametrize("channels_last", [False, True])
def test_training_step_equivalent(make_model, rates_of, channels_last: bool) -> None:
    """A whole training step: same loss; parameter gradients equal up to float summation order
    (channels_last convolutions sum in another order)."""
    ref = make_model("neurallnet", 32, width_multiplier=0.25, head_hidden=16).train()
    fast = set_lif_backend(copy.deepcopy(ref), "fused", channels_last=channels_last)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 3])
    rates = rates_of(ref, x)
    assert min(rates.values()) > 0.0  # every layer spikes
    loss_ref = F.cross_entropy(ref(x), y)
    loss_fast = F.cross_entropy(fast(x), y)
    torch.testing.assert_close(loss_fast, loss_ref, rtol=1e-6, atol=0)
    loss_ref.backward()
    loss_fast.backward()
    fast_params = dict(fast.named_parameters())
    for name, p in ref.named_parameters():
        g_ref, g_fast = p.grad, fast_params[name].grad
        scale = float(g_ref.abs().max())
        assert scale > 0, name
        err = float((g_fast - g_ref).abs().max())
        assert err <= (1e-4 * scale if channels_last else 1e-6 * scale), (name, err, scale)
