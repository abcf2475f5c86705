r"""Leaky integrate-and-fire dynamics shared by the model, the counters and the simulators.

The paper trains with SpikingJelly's ``LIFNode(tau=2, decay_input=True, v_reset=0)``:

.. math::
    H[t] = V[t-1] + \frac{1}{\tau}\,(X[t] - V[t-1]), \quad
    S[t] = \Theta(H[t] - V_{th}), \quad
    V[t] = H[t]\,(1 - S[t])

Our neurons are snnTorch's ``Leaky`` (:math:`U[t] = \beta U[t-1] + I[t]`, reset to zero, ATan
surrogate) with :math:`\beta = 1 - 1/\tau`. The :math:`1/\tau` input scale is folded into the
weights of the layer that feeds each neuron: SpikingJelly's neuron on input :math:`X` equals ours
on :math:`I = X/\tau`, spike for spike. (Applying the scale explicitly instead halves every
current at initialisation; with the SE gate on top, the deep layers then start almost silent
and training stalls - measured in docs/architecture.md.) The only difference left is the firing
comparison at equality (SpikingJelly ``>=``, snnTorch ``>``), which has measure zero for
real-valued inputs. In NIR terms the neuron is a ``LIF`` node with ``tau = tau_steps * dt``,
``r = tau_steps`` (``= 1/(1 - beta)``), ``v_leak = 0``, ``v_threshold = v_th``, reset to zero.

:func:`lif_step` is the pure function; :class:`LIF` is the thin module that runs snnTorch's
``Leaky`` over the time steps of a time-folded batch.
"""

from __future__ import annotations

from typing import NamedTuple

import snntorch
import torch
from snntorch import surrogate
from torch import nn


class LIFParameters(NamedTuple):
    """LIF constants in units of time steps.

    tau: membrane time constant (steps); v_th: firing threshold; alpha: ATan surrogate
    sharpness (gradient only). Reset is always to zero, as in the paper.
    """

    tau: float = 2.0
    v_th: float = 1.0
    alpha: float = 2.0

    @property
    def beta(self) -> float:
        """Per-step membrane decay, ``1 - 1/tau``."""
        return 1.0 - 1.0 / self.tau


def heaviside_atan(x: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Spike where ``x > 0``; backward uses the ATan surrogate (snnTorch's implementation)."""
    return surrogate.atan(alpha=alpha)(x)


def lif_step(
    x: torch.Tensor, v: torch.Tensor, p: LIFParameters = LIFParameters()
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LIF update: ``(input current, membrane) -> (spikes, new membrane)``."""
    h = p.beta * v + x
    s = heaviside_atan(h - p.v_th, p.alpha)
    return s, h * (1.0 - s)


def lif_sequence(x: torch.Tensor, p: LIFParameters = LIFParameters()) -> torch.Tensor:
    """Run :func:`lif_step` over the first dimension (time) from rest; returns the spikes."""
    v = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        s, v = lif_step(x[t], v, p)
        out.append(s)
    return torch.stack(out)


class LIF(nn.Module):
    """A population of LIF neurons over ``num_steps`` steps of a time-folded batch.

    Input and output are ``[T*B, ...]`` with time as the outer index (all of step 0, then all of
    step 1, ...), so that every stateless layer around it runs all steps as one batch and only
    the membrane is stepped through time.
    """

    def __init__(self, num_steps: int, params: LIFParameters = LIFParameters()) -> None:
        super().__init__()
        self.num_steps = int(num_steps)
        self.params = params
        # snnTorch reads its scalars back with .item(): build them on the CPU even when the
        # model is built on the meta device (load_model checks shapes there before allocating)
        with torch.device("cpu"):
            self.leaky = snntorch.Leaky(
                beta=params.beta,
                threshold=params.v_th,
                reset_mechanism="zero",
                spike_grad=surrogate.atan(alpha=params.alpha),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.reshape(self.num_steps, -1, *x.shape[1:])
        mem = torch.zeros_like(steps[0])
        out = []
        for t in range(self.num_steps):
            spk, mem = self.leaky(steps[t], mem)
            out.append(spk)
        self.leaky.reset_mem()  # drop the module-held state so nothing leaks between batches
        return torch.stack(out).reshape(x.shape)

    def extra_repr(self) -> str:
        p = self.params
        return f"num_steps={self.num_steps}, tau={p.tau}, v_th={p.v_th}, reset=zero"
