r"""Squeeze-and-Excitation computed by neuro-cores (``SEMode.ONCHIP``): integer semantics.

Per time step ``t``, on the integer current ``x_t = a_t + b`` of a gated layer (units ``1/S``,
``S`` the layer's scale), with per-layer shifts ``sh0, sh1, sh2`` and the gate's unit
``G = 2**GATE_BITS``::

    m[c]  = sum_hw x[c, h, w]                    C accumulator compartments
    q[c]  = m[c] >> sh0                          their graded spike (24-bit payload)
    z1[j] = sum_c w1[j, c] q[c] + b1[j]          dense synapses (8-bit, even) + bias
    h[j]  = max(z1[j], 0) >> sh1                 ReLU graded neuron
    z2[c] = sum_j w2[c, j] h[j] + b2[c]          dense synapses (8-bit, even) + bias
    g[c]  = clip(z2[c] >> sh2, 0, G)             hard-sigmoid graded neuron (piecewise linear)
    y[c, h, w] = (x[c, h, w] * g'[c]) >> GATE_BITS   product neuron (Lava's ProdNeuron)

``>>`` is an arithmetic shift (floor). The gate is pipelined with a **lag** of ``L`` image
steps: ``g'_t = g(x_{t-L})`` for ``t >= L``, and the gate of the zero current (the branch at
rest, ``g0 = g(0)``) for ``t < L`` of every image (default ``L = 1``: step ``t``'s current is
gated by step ``t-1``'s, causal). The branch is :data:`BRANCH_HOPS` synapse hops deep (count ->
fc1 -> fc2 -> broadcast), so the main path's current waits ``HOPS - L`` steps (Loihi 2 synaptic
delays) to meet its gate.

The float semantics this approximates: ``x * hardsigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)``
with ``hardsigmoid(u) = clip((u + 3) / 6, 0, 1)``. The scales are chosen so that the shifts are
the only rescaling: ``q`` has about ``2**QUANT_BITS`` steps per unit of mean current, ``h``
about ``2**HIDDEN_BITS`` per unit of hidden activation, and fc2's weight scale makes ``z2 >>
sh2`` exactly ``G (u + 3) / 6`` (the +3 lives in ``b2``).

:func:`onchip_gate_int` is the integer reference (torch int64, batched: the emulator's);
:class:`OnchipSE` is the same computation as a differentiable module on float tensors
(straight-through rounding), for fine-tuning inside :class:`~nalln.loihi.fake_quant.FakeQuantNet`;
its forward equals the integer reference exactly (float64, every value an integer < 2**53).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nalln.errors import NallnError
from nalln.loihi.arithmetic import DENSE_W, STATE_MAX

GATE_BITS = 7
GATE_ONE = 2**GATE_BITS  # g = GATE_ONE passes the current unchanged
QUANT_BITS = 7  # resolution of the squeezed mean current
HIDDEN_BITS = 7  # resolution of the hidden activation
BRANCH_HOPS = 4  # spike count -> fc1 -> fc2 -> broadcast: synapse hops of the gate branch
DEFAULT_LAG = 1
W_MAX = DENSE_W[1]  # dense weights: even values in [-254, 254]


@dataclass(frozen=True)
class OnchipScales:
    """How one gated layer's float SE maps onto integers (what a fixed-point grid records)."""

    name: str  # the gated plan stage (pointwise LIF)
    scale: float  # S of the layer: float current = x / S
    hw: int  # positions summed per channel
    sh0: int
    a1: float  # fc1 weight scale: w1_int = 2 round(w1 a1 / 2)
    sh1: int
    a2: float  # fc2 weight scale
    sh2: int
    lag: int = DEFAULT_LAG

    @property
    def s_q(self) -> float:
        """Units of ``q`` per unit of mean float current."""
        return self.scale * self.hw / 2**self.sh0

    @property
    def s1(self) -> float:
        return self.a1 * self.s_q

    @property
    def s_h(self) -> float:
        return self.s1 / 2**self.sh1

    @property
    def s2(self) -> float:
        return self.a2 * self.s_h

    @property
    def delay(self) -> int:
        """Steps the main path's current waits for its gate (Loihi 2 synaptic delay)."""
        return BRANCH_HOPS - self.lag

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OnchipScales:
        try:
            s = cls(
                str(d["name"]),
                float(d["scale"]),
                int(d["hw"]),
                int(d["sh0"]),
                float(d["a1"]),
                int(d["sh1"]),
                float(d["a2"]),
                int(d["sh2"]),
                int(d.get("lag", DEFAULT_LAG)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NallnError(
                f"an on-chip SE entry of the fixed-point grid is malformed ({exc})"
            ) from None
        check_lag(s.lag)
        if min(s.sh0, s.sh1, s.sh2) < 0 or s.hw < 1 or not (s.scale > 0 and s.a1 > 0 and s.a2 > 0):
            raise NallnError(f"on-chip SE entry {s.name!r} of the fixed-point grid is malformed")
        return s


def check_lag(lag: int) -> None:
    if not 0 <= int(lag) <= BRANCH_HOPS:
        raise NallnError(
            f"on-chip SE lag {lag} is outside 0..{BRANCH_HOPS}: the gate branch is "
            f"{BRANCH_HOPS} synapse hops deep, so the current can be gated by its own step "
            f"(lag 0, the main path delayed {BRANCH_HOPS} steps) up to {BRANCH_HOPS} steps back"
        )


def choose_scales(
    name: str, scale: float, hw: int, w1: np.ndarray, w2: np.ndarray, lag: int = DEFAULT_LAG
) -> OnchipScales:
    """Scales and shifts for one gate: full 8-bit resolution of ``w1`` and ``w2``; ``q`` and
    ``h`` at about :data:`QUANT_BITS` / :data:`HIDDEN_BITS` bits per unit."""
    check_lag(lag)
    sh0 = max(0, round(math.log2(scale * hw)) - QUANT_BITS)
    s_q = scale * hw / 2**sh0
    a1 = W_MAX / max(float(np.abs(w1).max()), 1e-6)
    s1 = a1 * s_q
    sh1 = max(0, math.floor(math.log2(s1)) - HIDDEN_BITS)
    s_h = s1 / 2**sh1
    # a2 = G 2**sh2 / (6 s_h) must keep max|w2| a2 <= W_MAX
    w2max = max(float(np.abs(w2).max()), 1e-6)
    sh2 = max(0, math.floor(math.log2(W_MAX / w2max * 6.0 * s_h / GATE_ONE)))
    a2 = GATE_ONE * 2**sh2 / (6.0 * s_h)
    return OnchipScales(name, float(scale), int(hw), sh0, a1, sh1, a2, sh2, int(lag))


@dataclass(frozen=True)
class OnchipGate:
    """One gate's integers (see module docstring); weights in torch layout ``[out, in]``."""

    scales: OnchipScales
    w1: np.ndarray  # [hidden, C] even int64
    b1: np.ndarray  # [hidden] int64
    w2: np.ndarray  # [C, hidden] even int64
    b2: np.ndarray  # [C] int64 (includes the hard sigmoid's +3)

    @property
    def channels(self) -> int:
        return int(self.w1.shape[1])

    @property
    def hidden(self) -> int:
        return int(self.w1.shape[0])

    def rest_gate(self) -> np.ndarray:
        """``g0``: the gate of the zero current (the branch at rest), int64 ``[C]``."""
        s = self.scales
        h = np.maximum(self.b1, 0) >> s.sh1
        return np.clip((self.w2 @ h + self.b2) >> s.sh2, 0, GATE_ONE)

    def cost(self, in_channels: int) -> dict[str, int]:
        """Neurons (compartments) and synapses the block adds on neuro-cores (counted), for a
        pointwise layer with ``in_channels`` inputs (docs/conversion.md "SE on the chip"): the
        spike counts of the inputs, a copy of the pointwise weights into C accumulators, fc1,
        ReLU, fc2, hard sigmoid, the broadcast of each gate to its channel's positions, and
        one product neuron per gated position with a one-to-one synapse into its LIF."""
        C, H, hw = self.channels, self.hidden, self.scales.hw
        neurons = {
            "count": in_channels,
            "accumulator": C,
            "relu": H,
            "hard_sigmoid": C,
            "product": C * hw,
        }
        synapses = {
            "count": in_channels * hw,
            "pointwise_copy": C * in_channels,
            "fc1": C * H,
            "fc2": H * C,
            "broadcast": C * hw,
            "product_to_lif": C * hw,
        }
        return {
            **{f"neurons_{k}": v for k, v in neurons.items()},
            **{f"synapses_{k}": v for k, v in synapses.items()},
            "neurons": sum(neurons.values()),
            "synapses": sum(synapses.values()),
            "main_path_delay_steps": self.scales.delay,
        }


def _ints(values: np.ndarray, scale: float, even: bool, what: str, tol: float) -> np.ndarray:
    step = 2.0 if even else 1.0
    v = np.asarray(values, np.float64) * scale / step
    r = np.rint(v)
    off = float(np.abs(v - r).max(initial=0.0))
    if off > tol:
        raise NallnError(
            f"{what} is not on the on-chip SE grid recorded in the checkpoint (off by {off:.3g} "
            "of a step): the model was changed after fine-tuning"
        )
    return (r * step).astype(np.int64)


def gate_from_float(
    s: OnchipScales, w1, b1, w2, b2, *, check: bool = True, tol: float = 0.25
) -> OnchipGate:
    """The integers of a float SE (``fc1``/``fc2`` weights and biases). ``check=True``: the
    values must already lie on the grid (a baked checkpoint; float32 storage of a bias
    multiplied by a large scale is off by up to a few hundredths of a step, hence ``tol``:
    below half a step the integer is still recovered exactly);
    ``check=False``: rounded and clipped to the 8-bit range, as the torch module does."""
    w1, b1, w2, b2 = (np.asarray(v, np.float64) for v in (w1, b1, w2, b2))
    if check:
        q1 = _ints(w1, s.a1, True, f"{s.name}: SE fc1 weight", 1e-3)
        q2 = _ints(w2, s.a2, True, f"{s.name}: SE fc2 weight", 1e-3)
        c1 = _ints(b1, s.s1, False, f"{s.name}: SE fc1 bias", tol)
        c2 = _ints(b2 + 3.0, s.s2, False, f"{s.name}: SE fc2 bias", tol)
    else:
        q1 = 2 * np.rint(w1 * s.a1 / 2).astype(np.int64)
        q2 = 2 * np.rint(w2 * s.a2 / 2).astype(np.int64)
        c1 = np.rint(b1 * s.s1).astype(np.int64)
        c2 = np.rint((b2 + 3.0) * s.s2).astype(np.int64)
    for w, n in ((q1, "fc1"), (q2, "fc2")):
        if check and np.abs(w).max(initial=0) > W_MAX:
            raise NallnError(f"{s.name}: SE {n} weights leave the 8-bit range [-254, 254]")
    return OnchipGate(s, np.clip(q1, -W_MAX, W_MAX), c1, np.clip(q2, -W_MAX, W_MAX), c2)


def lagged(g: torch.Tensor, g0: torch.Tensor, lag: int) -> torch.Tensor:
    """``g`` [T, N, C] -> the gate each step uses: ``g[t - lag]``, ``g0`` for ``t < lag``."""
    if lag == 0:
        return g
    T = g.shape[0]
    head = g0.expand(min(lag, T), *g.shape[1:]).to(g.dtype)
    return torch.cat([head, g[: T - lag]], 0) if lag < T else head


def _sat_count(v: torch.Tensor) -> int:
    return int((v.abs() > STATE_MAX).sum())


@torch.no_grad()
def gate_stages(gate: OnchipGate, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every value the gate's neurons hold at every step, for ``x`` int64 ``[T, N, C, H, W]``
    (current with bias): ``m, q, z1, h, z2, g`` (the gate computed at each step), ``gl`` (the
    gate each step uses, after the lag) and ``y`` (the gated current). What the emulator, the
    energy counts (``nalln.energy.onchip_gates``) and :func:`onchip_gate_int` read. The dense
    products run in float64 (exact: every partial sum is an integer below 2**53; CUDA has no
    int64 matmul)."""
    s = gate.scales
    x = x.to(torch.int64)
    dev = x.device
    m = x.sum(dim=(-1, -2))  # [T, N, C]
    q = m >> s.sh0
    w1 = torch.from_numpy(gate.w1).to(dev, torch.float64)
    w2 = torch.from_numpy(gate.w2).to(dev, torch.float64)
    b1 = torch.from_numpy(gate.b1).to(dev)
    b2 = torch.from_numpy(gate.b2).to(dev)
    z1 = (q.double() @ w1.T).round().to(torch.int64) + b1
    h = z1.clamp_min(0) >> s.sh1
    z2 = (h.double() @ w2.T).round().to(torch.int64) + b2
    g = (z2 >> s.sh2).clamp(0, GATE_ONE)
    g0 = torch.from_numpy(gate.rest_gate()).to(dev)
    gl = lagged(g, g0, s.lag)
    y = (x * gl[..., None, None]) >> GATE_BITS
    return {"m": m, "q": q, "z1": z1, "h": h, "z2": z2, "g": g, "gl": gl, "y": y}


@torch.no_grad()
def onchip_gate_int(gate: OnchipGate, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, int]]:
    """The integer reference: ``x`` int64 ``[T, N, C, H, W]`` (current with bias) -> gated
    current int64, and how many values left 24 bits (``q``, ``z1``, ``z2``)."""
    v = gate_stages(gate, x)
    over = {"se_gate": _sat_count(v["q"]) + _sat_count(v["z1"]) + _sat_count(v["z2"])}
    return v["y"], over


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return x + (q - x).detach()


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    return _ste(x, torch.floor(x))


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return _ste(x, torch.round(x))


def _even_weight(w: torch.Tensor, a: float) -> torch.Tensor:
    """Integer even weights ``2 round(w a / 2)`` in [-254, 254], straight-through."""
    wc = torch.clamp(w.double() * a, -W_MAX, W_MAX)
    return _ste(wc, 2.0 * torch.round(wc.detach() / 2.0))


class OnchipSE(nn.Module):
    """The on-chip SE gate as a differentiable module on the time-folded current
    ``[T*B, C, H, W]`` (float, on the layer's grid ``k / S``), with the integer semantics of
    the module docstring in the forward pass and straight-through rounding in the backward
    pass. ``fc1``/``fc2`` hold float weights (a trained SqueezeExcite's, same state-dict keys);
    rounding them onto the grid happens in the forward pass, as for every other layer."""

    replaces_product = True  # the fast path calls it on the whole current (nalln.models.fast)

    def __init__(self, se: nn.Module, scales: OnchipScales, num_steps: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(se.fc1.in_features, se.fc1.out_features)
        self.fc2 = nn.Linear(se.fc2.in_features, se.fc2.out_features)
        self.load_state_dict(
            {k: v.detach().clone() for k, v in se.state_dict().items() if k.startswith("fc")}
        )
        self.scales = scales
        self.num_steps = int(num_steps)

    def _gate(self, q: torch.Tensor) -> torch.Tensor:
        s = self.scales
        w1 = _even_weight(self.fc1.weight, s.a1)
        b1 = _round_ste(self.fc1.bias.double() * s.s1)
        w2 = _even_weight(self.fc2.weight, s.a2)
        b2 = _round_ste((self.fc2.bias.double() + 3.0) * s.s2)
        h = _floor_ste(torch.relu(q @ w1.T + b1) / 2**s.sh1)
        return torch.clamp(_floor_ste((h @ w2.T + b2) / 2**s.sh2), 0, GATE_ONE)

    def forward(self, cur: torch.Tensor) -> torch.Tensor:
        s, T = self.scales, self.num_steps
        x = _round_ste(cur.double() * s.scale)  # the integer current
        q = _floor_ste(x.sum(dim=(2, 3)) / 2**s.sh0)
        g = self._gate(q).reshape(T, -1, q.shape[-1])
        g0 = self._gate(torch.zeros_like(q[:1]))[0]
        gl = lagged(g, g0, s.lag).reshape(-1, q.shape[-1])
        y = _floor_ste(x * gl[:, :, None, None] / GATE_ONE)
        return (y / s.scale).to(cur.dtype)

    def integer_gate(self) -> OnchipGate:
        """This module's integers (what the chip runs)."""
        return gate_from_float(
            self.scales,
            self.fc1.weight.detach().double().numpy(),
            self.fc1.bias.detach().double().numpy(),
            self.fc2.weight.detach().double().numpy(),
            self.fc2.bias.detach().double().numpy(),
            check=False,
        )

    @torch.no_grad()
    def on_grid_state(self) -> dict[str, torch.Tensor]:
        """Float values exactly on the grid (what ``bake`` writes into the checkpoint)."""
        g = self.integer_gate()
        s = self.scales
        return {
            "fc1.weight": torch.from_numpy(g.w1 / s.a1).float(),
            "fc1.bias": torch.from_numpy(g.b1 / s.s1).float(),
            "fc2.weight": torch.from_numpy(g.w2 / s.a2).float(),
            "fc2.bias": torch.from_numpy(g.b2 / s.s2 - 3.0).float(),
        }
