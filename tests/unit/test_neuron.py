"""Our LIF neuron against SpikingJelly's update equation, written out here as the reference."""

import math

import pytest
import torch

from nalln.models.neuron import LIF, LIFParameters, heaviside_atan, lif_sequence, lif_step


def spikingjelly_lif(x: torch.Tensor, tau: float = 2.0, v_th: float = 1.0) -> torch.Tensor:
    """SpikingJelly LIFNode(tau, decay_input=True, v_reset=0.0), multi-step, from rest.

    H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau
    S[t] = Heaviside(H[t] - V_th)            (fires at H >= V_th)
    V[t] = H[t] * (1 - S[t]) + V_reset * S[t]
    """
    v = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        h = v + (x[t] - v) / tau
        s = (h >= v_th).to(x.dtype)
        v = h * (1 - s)
        out.append(s)
    return torch.stack(out)


@pytest.mark.parametrize("tau", [2.0, 4.0])
def test_leaky_matches_spikingjelly_with_input_scale_folded(tau: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 10_000, generator=g) * 2.0  # [T, neurons]
    reference = spikingjelly_lif(x, tau=tau)
    p = LIFParameters(tau=tau)
    ours_pure = lif_sequence(x / tau, p)  # the 1/tau scale lives in the weights
    lif = LIF(num_steps=8, params=p)
    ours_module = lif(x / tau)  # time-folded [T*B] with B = 10,000
    assert torch.equal(ours_pure, reference)
    assert torch.equal(ours_module, reference)
    assert reference.mean() > 0.02  # the comparison exercised real spiking


def test_step_resets_to_zero_and_decays_by_beta() -> None:
    p = LIFParameters(tau=2.0, v_th=1.0)
    s, v = lif_step(torch.tensor([0.6]), torch.tensor([0.0]), p)
    assert s.item() == 0 and v.item() == pytest.approx(0.6)
    s, v = lif_step(torch.tensor([0.8]), v, p)  # 0.5 * 0.6 + 0.8 = 1.1 > 1
    assert s.item() == 1 and v.item() == 0.0
    s, _ = lif_step(torch.tensor([1.0]), torch.tensor([0.0]), p)  # exactly at threshold: no spike
    assert s.item() == 0


def test_atan_surrogate_gradient_formula() -> None:
    x = torch.linspace(-2, 2, 41, requires_grad=True)
    heaviside_atan(x, alpha=2.0).sum().backward()
    expected = 2.0 / 2 / (1 + (math.pi / 2 * 2.0 * x.detach()) ** 2)
    assert torch.allclose(x.grad, expected, atol=1e-6)


def test_lif_module_leaves_no_state_between_calls() -> None:
    lif = LIF(num_steps=4)
    x = torch.rand(4 * 3, 5) * 3
    assert torch.equal(lif(x), lif(x))
