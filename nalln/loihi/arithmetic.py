r"""Loihi 2's integer arithmetic, as Lava's bit-accurate models compute it.

Lava's bit-accurate LIF (``PyLifModelBitAcc`` / ``PyLifResetModelBitAcc``) computes, per step,
with integer synaptic input ``a`` (the conv/dense output, plus the recurrent dense's output of
the neuron's previous spikes) and 12-bit decays::

    u = trunc(u * (4096 - (du + 1)) / 4096) + (a << 6)        # 24-bit, wraps (ds_offset = 1)
    v = trunc(v * (4096 - dv) / 4096) + u + (bias_mant << 6)   # 24-bit, saturates
    spike if v > (vth << 6); then v = 0

(``trunc`` is Lava's ``sign(p) * (|p| >> 12)``.) ``du = 4095`` is no current memory (LIF, IF,
Threshold); a CubaLIF with ``dt/tau_syn = alpha`` gets ``du = round(4096 alpha) - 1``.
A float layer ``I = W s + b`` with threshold ``v_th`` maps onto it with one scale ``S`` per
layer: ``a = round(W S) s``, ``bias_mant = round(b S)``, ``vth = round(v_th S)``,
``dv = round(4096 dt/tau)``; a recurrent weight ``W_rec`` (the neuron's own spikes, one step
late) is quantised on the same ``S`` (``round(W_rec S)``, even 8-bit dense values, times the
loop Dense's ``2^weight_exp``), so both currents are in the same units. A bias that must enter
``u`` rather than ``v`` (a CubaLIF's input bias; a loop Affine's bias, from the second step) is a
:class:`~nalln.loihi.quant_plan.BiasDrive`: an always-on neuron's spike through a dense column
``round(b S)`` (same mantissa-and-exponent form), added to ``a``. Weights are 8-bit: conv
``[-128, 127]``; dense even values in ``[-254, 254]`` (Lava truncates the LSB of mixed-sign
dense weights). The image enters as 24-bit
graded spikes ``round(x * s_in)``, so the stem's scale is ``S = s_in * alpha``.

Calibration (greedy, layer by layer, on training images): each layer receives the spikes of the
already-quantised layers before it; for a grid of weight scales (``alpha = c * 127 / max|W|``,
``c >= 1`` clips the largest weights to gain resolution for the rest) and thresholds
(``vth = round(v_th S (1 + d))``, small ``d`` compensates the truncating decay) it simulates the
layer and keeps the setting whose spikes agree best with the float reference, among those that
never overflow (synaptic input ``|a| < 2^17`` so that ``a << 6`` fits the 24-bit current,
current and membrane within 24 bits, ``|bias_mant| < 2^12``, ``vth < 2^17``). The readout keeps
the scale with the best top-1 agreement. :func:`emulate` reproduces Lava's integer arithmetic
exactly (the tests compare it with real Lava runs spike for spike) and counts overflows per
layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from nalln.ir.drive import Drive
from nalln.ir.se_gate import se_gate_numpy

if TYPE_CHECKING:
    from nalln.loihi.quant_plan import QStage

ACT_SHIFT = 6
DECAY_UNITY = 4096
DU_NONE = DECAY_UNITY - 1  # du + ds_offset (1) = 4096: the current keeps nothing of the last step
STATE_MAX = 2**23 - 1  # u and v are 24-bit signed
A_MAX = 2**17 - 1  # |a| << 6 must fit the 24-bit current
VTH_MAX = 2**17 - 1  # vth mantissa is 17-bit unsigned
BIAS_MAX = 2**12 - 1  # bias mantissa is 13-bit signed (exponent fixed at 6, as netx uses)
INPUT_MAX = 2**23 - 1  # graded spikes carry 24 bits
CONV_W = (-128, 127)
DENSE_W = (-254, 254)  # even values
CLIP_FACTORS = (1.0, 1.1, 1.25, 1.5, 2.0)  # c > 1 clips the largest weights
STEM_FACTORS = (0.5, 0.7, 1.0, 1.25)  # the stem trades weight bits against input bits
THRESHOLD_TWEAKS = (0.0, -0.005, 0.005, -0.01, 0.01)


def quantise_weight(w: np.ndarray, alpha: float, kind: str) -> tuple[np.ndarray, float]:
    """Integer weights for scale ``alpha`` and the fraction of weights that were clipped."""
    if kind == "conv":
        q = np.rint(w * alpha)
        lo, hi = CONV_W
    else:
        q = 2 * np.rint(w * alpha / 2)
        lo, hi = DENSE_W
    clipped = float(np.mean((q < lo) | (q > hi)))
    return np.clip(q, lo, hi).astype(np.int64), clipped


WEIGHT_EXP_MAX = 7  # a Loihi synapse group's weight exponent: weights * 2^e, e in [-8, 7]


def quantise_recurrent(
    w: np.ndarray, scale: float, exponent: bool
) -> tuple[np.ndarray, int, float]:
    """Loop weights on the layer's scale ``S``: even 8-bit mantissas times ``2^e`` (the loop
    Dense's ``weight_exp``), with the smallest ``e >= 0`` that keeps ``max|W_rec| S / 2^e``
    within 254 (``exponent=False``: ``e = 0``, larger values clip). Returns the integers in
    units of ``a`` (mantissa << e), ``e`` and the clipped fraction."""
    e = 0
    need = float(np.abs(w).max(initial=0)) * scale / DENSE_W[1]
    if exponent and need > 1:
        e = min(int(np.ceil(np.log2(need))), WEIGHT_EXP_MAX)
    q, clipped = quantise_weight(w, scale / 2**e, "dense")
    return q << e, e, clipped


def w_range(kind: str) -> int:
    return CONV_W[1] if kind == "conv" else DENSE_W[1]


def synaptic_current(q: QStage, x: torch.Tensor) -> torch.Tensor:
    """Integer synaptic input ``a`` for inputs ``x`` [N, *in_shape], exact: float64 for the
    graded image; float32 for spikes (|a| <= 254 * fan-in < 2^24, so every sum is exact)."""
    w = torch.from_numpy(q.weight).to(device=x.device, dtype=x.dtype)
    if q.kind == "conv":
        return F.conv2d(x, w, None, stride=q.stride, padding=q.padding, groups=q.groups)
    return F.linear(x.reshape(x.shape[0], -1), w)


def gate_fixed(q: QStage, x: torch.Tensor) -> torch.Tensor:
    """What our Lava SE process computes: gate in float on (W, H, C) maps, product rounded."""
    xs = x.cpu().numpy()
    out = np.empty_like(xs)
    g = q.gate
    for n in range(xs.shape[0]):
        gate = se_gate_numpy(xs[n].transpose(2, 1, 0) / q.scale, g.w1, g.b1, g.w2, g.b2)
        out[n] = np.rint(xs[n] * gate[:, None, None])
    return torch.from_numpy(out).to(x.device)


def current_du(current_decay: float) -> int:
    """Lava's 12-bit ``du`` for a float current decay: its bit-accurate LIF decays ``u`` by
    ``(du + ds_offset) / 4096`` with ``ds_offset = 1``, so ``du = round(4096 d_u) - 1``
    (``d_u = 1``: 4095, no current memory; ``d_u = 0.5``: 2047, ``u`` halves exactly)."""
    return int(min(max(round(current_decay * DECAY_UNITY) - 1, 0), DU_NONE))


def decay_fixed(x: torch.Tensor, keep: int) -> torch.Tensor:
    """``sign(x * keep) * (|x * keep| >> 12)``: Lava's decay, truncating toward zero."""
    return torch.div(x * keep, DECAY_UNITY, rounding_mode="trunc")


def wrap_current(u: torch.Tensor) -> torch.Tensor:
    """Lava's 24-bit current wrap: above 2^23 it loses 2^24, at or below -2^23 it gains 2^24."""
    lim = STATE_MAX + 1
    w = torch.where(u > lim, u - 2 * lim, u)
    return torch.where(w <= -lim, u + 2 * lim, w)


def lif_fixed(
    a_steps: torch.Tensor, q: QStage, bias: np.ndarray | None, vth: int
) -> tuple[torch.Tensor, dict[str, int]]:
    """Lava's fixed-point LIF over T steps from rest; spikes [T, N, ...] and overflow counts.
    ``q.du`` is the current decay, ``q.recurrent`` (int, [n, n]) the loop weights: the spikes
    of step ``t - 1`` add ``W_rec s`` to the synaptic input of step ``t`` (none at step 0);
    ``q.drives`` add their biases to the synaptic input from their first step on."""
    shape = a_steps.shape[2:]
    dev = a_steps.device
    bias_v = torch.zeros(()) if bias is None else torch.from_numpy(bias.astype(np.int64))
    bias_v = bias_v.to(dev)
    if bias is not None and len(shape) == 3:
        bias_v = bias_v.view(-1, 1, 1)
    bias_v = bias_v.to(torch.int64) << ACT_SHIFT
    rec = None if q.recurrent is None else torch.from_numpy(q.recurrent.astype(np.float64)).to(dev)
    drives = []  # (values broadcast to the population, first step)
    for d in q.drives:
        dv_ = torch.from_numpy(d.values.astype(np.int64)).to(dev)
        drives.append((dv_.view(-1, 1, 1) if len(shape) == 3 else dv_, d.from_step))
    u = torch.zeros(a_steps.shape[1:], dtype=torch.int64, device=dev)
    v = torch.zeros_like(u)
    th = int(vth) << ACT_SHIFT
    keep_u, keep_v = DECAY_UNITY - (int(q.du) + 1), DECAY_UNITY - int(q.dv)
    over = {"synaptic_input": 0, "current": 0, "membrane": 0}
    out = []
    for t in range(a_steps.shape[0]):
        a = a_steps[t].to(torch.int64)
        if rec is not None and out:  # |W_rec s| <= 254 * n: exact in float64
            a = a + (out[-1].double() @ rec.T).to(torch.int64)
        for d, first in drives:
            if t >= first:
                a = a + d
        over["synaptic_input"] += int((a.abs() > A_MAX).sum())
        u = decay_fixed(u, keep_u) + (a << ACT_SHIFT)
        over["current"] += int((u.abs() > STATE_MAX).sum())
        u = wrap_current(u)
        v = decay_fixed(v, keep_v) + u + bias_v
        bad = v.abs() > STATE_MAX
        over["membrane"] += int(bad.sum())
        v = v.clamp(-STATE_MAX, STATE_MAX)
        s = v > th
        v = v.masked_fill(s, 0)
        out.append(s)
    return torch.stack(out), over


def round_input(x: torch.Tensor, scale: float) -> tuple[torch.Tensor, int]:
    """The image as the chip receives it: 24-bit graded spikes ``round(x * scale)``, and how
    many values left that range (the one place the input is rounded)."""
    xi = torch.round(x.double() * scale)
    return xi.clamp(-INPUT_MAX, INPUT_MAX), int((xi.abs() > INPUT_MAX).sum())


def stage_inputs(prev: torch.Tensor, q: QStage) -> torch.Tensor:
    """[T, N, ...] spikes -> [T*N, ...] float32 (0/1) for the synapse."""
    return prev.reshape(-1, *prev.shape[2:]).float()


def run_stage(q: QStage, inp: torch.Tensor, static: bool, T: int) -> torch.Tensor:
    """Synaptic input per step [T, N, ...]. ``static``: the graded network input, ``[N, ...]``
    held at every step (computed once) or ``[N, T, ...]`` a value per step (float64, exact)."""
    if static:
        drive = Drive.of(inp, q.in_shape)
        a = synaptic_current(q, drive.flat(inp).double())
        if drive is Drive.PER_STEP:
            return a.reshape(inp.shape[0], T, *a.shape[1:]).transpose(0, 1)
        return a.unsqueeze(0).expand(T, *a.shape)
    a = synaptic_current(q, stage_inputs(inp, q))
    return a.reshape(T, -1, *a.shape[1:])


def with_gate(q: QStage, a: torch.Tensor) -> torch.Tensor:
    x = a.double() + torch.from_numpy(q.bias.astype(np.float64)).to(a.device).view(1, 1, -1, 1, 1)
    return gate_fixed(q, x.reshape(-1, *x.shape[2:])).reshape(x.shape)
