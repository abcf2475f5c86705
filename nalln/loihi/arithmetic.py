r"""Loihi 2's integer arithmetic, as Lava's bit-accurate models compute it.

Lava's bit-accurate LIF (``PyLifModelBitAcc`` / ``PyLifResetModelBitAcc``) computes, per step,
with integer synaptic input ``a`` (the conv/dense output, plus the recurrent dense's output of
the neuron's previous spikes) and 12-bit decays::

    u = trunc(u * (4096 - (du + 1)) / 4096) + (a << 6)        # 24-bit, wraps (ds_offset = 1)
    v = trunc(v * (4096 - dv) / 4096) + u + (bias_mant << 6)   # 24-bit, saturates
    spike if v > (vth << 6); then v = 0

(``trunc`` is Lava's ``sign(p) * (|p| >> 12)``.) A population with a producer's semantics
(:mod:`nalln.ir.semantics`; Loihi 2 microcode, :func:`lif_integer`) changes only the spike and
the reset: ``z = v // (vth << 6)`` where ``v > 0`` (multi: a graded spike carrying the count,
which the next synapse weighs), ``v -= z (vth << 6)`` (subtract), or that amount subtracted
next step after the decay, with the bias (subtract-undecayed), then ``v = max(v, vmin << 6)``
(a floor ``vmin = round(v_min S)``). ``du = 4095`` is no current memory (LIF, IF,
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

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from nalln.ir.drive import Drive
from nalln.ir.se_gate import se_gate_numpy
from nalln.ir.semantics import ResetRule, SpikeMode

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


EXACT_F32 = 2**24  # every integer of magnitude <= 2^24 is a float32


def synaptic_current(q: QStage, x: torch.Tensor) -> torch.Tensor:
    """Integer synaptic input ``a`` for integer inputs ``x`` [N, *in_shape], exact, in
    ``x.dtype``: see :func:`_synapse`."""
    return _synapse(q, x, float(x.abs().max()) if x.numel() else 0.0).to(x.dtype)


def _l1(q: QStage) -> int:
    """``max_o sum_i |W[o, i]|``: the largest ``|a|`` per unit of ``max |x|``."""
    w = np.abs(q.weight.reshape(q.weight.shape[0], -1))
    return int(w.sum(1).max(initial=0))


def _synapse(
    q: QStage,
    x: torch.Tensor,
    peak: float,
    bias: np.ndarray | None = None,
    gain: int = 1,
    pool: dict[tuple, Any] | None = None,
) -> torch.Tensor:
    """``a = W x`` (``+ bias``, when given) for integer ``x`` with ``|x| <= peak``, exact.

    Every partial sum of a row is an integer of magnitude at most ``peak * max_o sum_i
    |W[o, i]| + max |bias|``; at most ``2^24`` each is a float32, so float32 is exact in any
    summation order (spikes, ``peak = 1``: ``|a| <= 127 * fan-in`` for a conv, ``254 * fan-in``
    for a dense, far below). CPU convolutions run oneDNN's direct algorithm (no Winograd or
    FFT), channels last (a depthwise conv 10x faster than in NCHW); on CUDA TF32 is off and the
    result is rounded (an identity when exact; it absorbs any sub-0.5 error of a cuDNN
    algorithm). Above the bound (a very bright graded image) it computes in float64, exact
    below ``2^53``. ``gain`` (a power of two) scales the weights and bias, so the result is
    ``gain (W x + bias)``, exact under the same bound times ``gain``. ``pool`` keeps the
    converted weights for the next batch. Returns float32 or float64, in the layout the
    convolution produced."""
    b_peak = float(np.abs(bias).max(initial=0)) if bias is not None else 0.0
    exact32 = gain * (peak * _l1(q) + b_peak) <= EXACT_F32
    dt = torch.float32 if exact32 else torch.float64
    w, b = _weights(q, bias, gain, dt, x.device, pool)
    with _exact_cuda(x.device):
        if q.kind == "conv":
            x = x.reshape(x.shape[0], *q.stage.synapse.in_image)  # a Conv1d: [N, C, 1, L]
            if dt is torch.float32:
                x = x.to(dtype=dt, memory_format=torch.channels_last)
            else:
                x = x.to(dt)
            a = F.conv2d(x, w, b, stride=q.stride, padding=q.padding, groups=q.groups)
        else:
            a = F.linear(x.reshape(x.shape[0], -1).to(dt), w, b)
    return a.round_() if a.device.type == "cuda" else a


def narrow(a: torch.Tensor) -> torch.Tensor:
    """Integer currents in float32 when every value is exact there (``|a| <= 2^24``: what a
    single synapse's current is in), else as they are (a sum of merged synapses' currents)."""
    return a.float() if a.numel() == 0 or float(a.abs().max()) <= EXACT_F32 else a


def _weights(
    q: QStage,
    bias: np.ndarray | None,
    gain: int,
    dt: torch.dtype,
    device: torch.device,
    pool: dict[tuple, Any] | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``gain W`` (channels last for a float32 conv) and ``gain bias`` in ``dt`` on ``device``:
    integers times a power of two, exact; from ``pool`` when the same layer asked before."""
    key = ("weights", q.name, gain, dt, str(device), bias is None)
    if pool is not None and key in pool:
        return pool[key]
    w = torch.from_numpy(q.weight).to(device=device, dtype=dt) * gain
    if q.kind == "conv" and dt is torch.float32:
        w = w.contiguous(memory_format=torch.channels_last)
    b = None
    if bias is not None:
        b = torch.from_numpy(np.asarray(bias)).to(device=device, dtype=dt) * gain
    if pool is not None:
        pool[key] = (w, b)
    return w, b


def _exact_cuda(device: torch.device):
    """No TF32 on CUDA (10-bit mantissas would round large integer inputs)."""
    import contextlib

    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    return torch.backends.cudnn.flags(
        enabled=True, benchmark=False, deterministic=True, allow_tf32=False
    )


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
    ``q.drives`` add their biases to the synaptic input from their first step on.

    A feed-forward layer without current memory (LIF, IF, Threshold: the network's every layer)
    whose synaptic input stays in range takes :func:`_lif_float`, the same arithmetic in floats
    (exact, proven there); :func:`lif_integer` handles the rest (loops, drives, CubaLIF, any
    synaptic overflow) and is the reference the tests hold the float path to."""
    s, over = lif_spikes(a_steps, q, bias, vth)
    return (s if counts(q) else s.bool()), over


def nir_neuron(q: QStage) -> bool:
    """Lava's own LIF: reset to zero, one spike per step, no floor (NIR's semantics); the
    float fast paths take only these."""
    n = q.neuron
    return n is None or (
        n.reset is ResetRule.ZERO and n.spikes is SpikeMode.SINGLE and n.v_min is None
    )


def counts(q: QStage) -> bool:
    """The population sends spike counts (graded spikes), not 0/1."""
    return q.neuron is not None and q.neuron.spikes is SpikeMode.MULTI


def lif_spikes(
    a_steps: torch.Tensor, q: QStage, bias: np.ndarray | None, vth: int
) -> tuple[torch.Tensor, dict[str, int]]:
    """:func:`lif_fixed` with the spikes as 0/1 in whatever dtype and layout the arithmetic
    produced (float32 channels last on the fast path: what the next synapse reads)."""
    if q.recurrent is None and not q.drives and int(q.du) == DU_NONE and nir_neuron(q):
        fast = _lif_float(a_steps, q, bias, vth)
        if fast is not None:
            return fast
    return lif_integer(a_steps, q, bias, vth)


def lif_integer(
    a_steps: torch.Tensor, q: QStage, bias: np.ndarray | None, vth: int
) -> tuple[torch.Tensor, dict[str, int]]:
    """:func:`lif_fixed` step by step in int64, Lava's arithmetic as written (bool spikes, or
    float32 counts for a multi-spike population), with the producer's semantics of
    ``q.neuron`` (module docstring): the membrane is clamped to 24 bits before the spike, the
    count is ``v // th`` where ``v > 0``, the undecayed subtraction is owed to the next step
    (subtracted with the bias, before the clamp), and the floor follows the reset."""
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
    n = q.neuron
    multi = counts(q)
    reset = ResetRule.ZERO if n is None else n.reset
    floor = None if q.vmin is None else int(q.vmin) << ACT_SHIFT
    owed = torch.zeros_like(u) if reset is ResetRule.SUBTRACT_UNDECAYED else None
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
        if owed is not None:
            v = v - owed
        bad = v.abs() > STATE_MAX
        over["membrane"] += int(bad.sum())
        v = v.clamp(-STATE_MAX, STATE_MAX)
        s = torch.where(v > 0, torch.div(v, th, rounding_mode="floor"), 0) if multi else v > th
        if reset is ResetRule.ZERO:
            v = v.masked_fill(s > 0, 0)
        elif reset is ResetRule.SUBTRACT:
            v = v - s * th
        else:
            owed = s * th
        if floor is not None:
            v = v.clamp(min=floor)
        out.append(s)
    spikes = torch.stack(out)
    return (spikes.float() if multi else spikes), over


def _exact_float_dtype(keep_v: int, bias_shifted: torch.Tensor, th: int) -> torch.dtype:
    """float32 when every step of :func:`_lif_float` is exact in it, else float64.

    With ``|a| <= A_MAX`` the current is ``u = 64 a``, ``|u| < 2^23``, and the drive ``64 a +
    (bias << 6)`` (``|bias << 6| < 2^23``) has ``|.| < 2^24``: exact. The membrane ``|v| <=
    STATE_MAX < 2^23`` after each step's clamp; ``v * keep / 4096`` is exact in float32 when
    ``keep`` is 0 or a power of two (a scaling by ``2^-k``, e.g. ``dv = 2048``: ``v / 2``), so
    its truncation is exact. ``trunc(v keep / 4096) + drive`` rounds only when the exact sum
    exceeds ``2^24 > STATE_MAX``, and rounding is monotone, so the clamp and the overflow count
    see what they see in integers. The threshold ``vth << 6 < 2^24`` is exact; the reset is
    ``v - v = 0``. Otherwise float64 (every value ``< 2^36`` there: ``v * keep`` has at most
    35 significant bits, exact)."""
    power_of_two = keep_v == 0 or (keep_v & (keep_v - 1)) == 0
    small_bias = int(bias_shifted.abs().max()) < 2**23 if bias_shifted.numel() else True
    return torch.float32 if power_of_two and small_bias and th < 2**24 else torch.float64


def _lif_float(
    a_steps: torch.Tensor, q: QStage, bias: np.ndarray | None, vth: int
) -> tuple[torch.Tensor, dict[str, int]] | None:
    """:func:`lif_fixed` for a layer without loop, drive or current memory, computed in floats
    (exact: :func:`_exact_float_dtype`), or None when some ``|a| > A_MAX`` (then the current
    wraps; the int64 loop reproduces that). Spikes are float 0/1 (what the next synapse
    reads) in the layout of ``a_steps``'s steps (channels last after a convolution), so the
    next synapse reads them without a conversion. ``a_steps`` is not modified; with stride 0
    over steps (a held input's current) it is read once, not T times.

    Per step: ``v = trunc(v keep / 4096)`` (one exact division when ``keep`` divides 4096),
    ``v += 64 a + (bias << 6)``, ``s = v > vth << 6``, ``v -= v s`` (reset; ``v - v = 0``
    exactly). The membrane check per step is skipped when it is proven unneeded: with ``D =
    max |64 a + (bias << 6)|`` and ``c = keep / 4096 <= 1``, ``|v_t| <= c |v_{t-1}| + D``
    (truncation and reset only shrink ``|v|``), so ``|v_t| <= D (1 + c + ... + c^(T-1))``; at
    most ``STATE_MAX`` means no step can overflow."""
    steps = a_steps.shape[0]
    dev = a_steps.device
    held = steps > 1 and a_steps.stride(0) == 0
    first = a_steps[0] if held else a_steps
    peak_a = _peak(first)
    if peak_a > A_MAX:
        return None
    shape = a_steps.shape[2:]
    th = int(vth) << ACT_SHIFT
    if bias is None:
        b = torch.zeros((), dtype=torch.int64)
    else:
        b = torch.from_numpy(np.asarray(bias, dtype=np.int64)) << ACT_SHIFT
        if len(shape) == 3:
            b = b.view(-1, 1, 1)
    keep_v = DECAY_UNITY - int(q.dv)
    dt = _exact_float_dtype(keep_v, b, th)
    peak_b = int(b.abs().max()) if b.numel() else 0
    b = b.to(device=dev, dtype=dt)
    growth = sum((keep_v / DECAY_UNITY) ** k for k in range(steps))
    check = (peak_a * 2**ACT_SHIFT + peak_b) * growth > STATE_MAX
    spikes = _steps_like(a_steps[0], steps, dt)
    # a few images at a time: the chunk's membrane and drive stay in the core's cache
    n = a_steps.shape[1]
    per_image = max(a_steps[0, :1].numel(), 1)
    chunk = n if dev.type != "cpu" else max(1, min(n, CHUNK_ELEMENTS // per_image))
    membrane = 0
    for i in range(0, n, chunk):
        part = slice(i, min(i + chunk, n))
        src = first[part] if held else first[:, part]
        # 64 a + (bias << 6): integers, exact; a per-step drive becomes the spikes in place
        drive = torch.empty_like(src, dtype=dt) if held else spikes[:, part]
        torch.add(b, src, alpha=2**ACT_SHIFT, out=drive)
        out = spikes[:, part] if held else None
        membrane += _membrane_steps(drive, held, out, keep_v, th, check)
    return spikes, {"synaptic_input": 0, "current": 0, "membrane": membrane}


def spike_stage(
    q: QStage,
    inp: torch.Tensor,
    T: int,
    graded: bool = False,
    pool: dict[tuple, Any] | None = None,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, int]] | None:
    """Synapse and LIF of a layer in one: ``lif_spikes(run_stage(q, inp, graded, T), q,
    q.bias, q.vth)`` for 0/1 spikes ``inp`` [T, N, ...] or (``graded``) the held graded image
    [N, ...], or None where it does not apply (gate, loop, drive, current memory, a per-step
    input, or a bound below that fails: then the caller takes that general path; an SE gate,
    hybrid or on-chip, always does).

    Faster by what the bounds prove. The bias rides in the synapse (``a + bias`` exact in
    float32: :func:`_synapse`), so a step adds ``64 (a + bias) = 64 a + (bias << 6)`` in one
    pass. With 0/1 inputs ``|a| <= max_o sum_i |W[o, i]|``; at most ``A_MAX`` means no synaptic
    overflow is possible, so ``a`` is never scanned; the graded image's current is scanned
    once (``max |a + bias| + max |bias| <= A_MAX`` proves ``|a| <= A_MAX``). The membrane bound
    of :func:`_lif_float` uses ``D = 64 max |a + bias|`` (bounded by ``64 (max sum |W| + max
    |bias|)`` for spikes). With spikes in, the synapse's weights carry the factor 64 (exact:
    ``64 (max sum |W| + max |bias|) < 2^24``), and the membrane steps run in the synapse's own
    output, no copy. ``pool`` (layer and shape -> buffer) lends the spike buffer and the
    converted weights of the same layer's previous batch: the caller must be done with them
    (fresh pages fault in slowly). ``keep`` (bool, the spikes' shape: a slice of the caller's
    trace) receives each chunk's spikes while they are still in the cache (see
    :func:`kept`)."""
    if q.gate is not None or q.onchip is not None or q.recurrent is not None:
        return None
    if q.drives or int(q.du) != DU_NONE or not nir_neuron(q):
        return None
    bias = np.asarray(q.bias, dtype=np.int64)
    peak_b = int(np.abs(bias).max(initial=0))
    th = int(q.vth) << ACT_SHIFT
    keep_v = DECAY_UNITY - int(q.dv)
    power_of_two = keep_v == 0 or (keep_v & (keep_v - 1)) == 0
    if peak_b > BIAS_MAX or not power_of_two or th >= 2**24:
        return None
    if graded:
        if Drive.of(inp, q.in_shape) is not Drive.HELD:
            return None
        a = _synapse(q, inp, _peak(inp), bias, pool=pool)
        if a.dtype != torch.float32:
            return None
        peak = _peak(a)
        if peak + peak_b > A_MAX:
            return None
        step0 = a
    else:
        peak = _l1(q) + peak_b
        if peak - peak_b > A_MAX:
            return None
        a = _synapse(q, prev_flat(inp), 1.0, bias, 2**ACT_SHIFT, pool)  # 64 (a + bias)
        if a.dtype != torch.float32:
            return None
        a = a.reshape(T, -1, *a.shape[1:])
        step0 = a[0]
    growth = sum((keep_v / DECAY_UNITY) ** k for k in range(T))
    check = 2**ACT_SHIFT * peak * growth > STATE_MAX
    spikes = _held_spikes(q, step0, T, pool) if graded else a  # spikes: in the synapse's output
    n = step0.shape[0]
    per_image = max(step0[:1].numel(), 1)
    chunk = n if a.device.type != "cpu" else max(1, min(n, CHUNK_ELEMENTS // per_image))
    gain = 2**ACT_SHIFT if graded else 1  # spikes: 64 is in the weights
    keep = keep if kept(keep, spikes) else None
    membrane = 0
    for i in range(0, n, chunk):
        part = slice(i, min(i + chunk, n))
        drive = a[part] if graded else a[:, part]
        out = spikes[:, part] if graded else None
        membrane += _membrane_steps(drive, graded, out, keep_v, th, check, gain)
        if keep is not None:
            keep[:, part].copy_(spikes[:, part])
    return spikes, {"synaptic_input": 0, "current": 0, "membrane": membrane}


def _held_spikes(
    q: QStage, step0: torch.Tensor, T: int, pool: dict[tuple, Any] | None
) -> torch.Tensor:
    """The spike buffer of a layer driven by the held image, lent by ``pool`` batch after
    batch (fresh pages fault in slowly)."""
    key = (q.name, T, *step0.shape)
    spikes = None if pool is None else pool.get(key)
    if spikes is None or spikes.device != step0.device:
        spikes = _steps_like(step0, T, torch.float32)
        if pool is not None:
            pool[key] = spikes
    return spikes


def kept(keep: torch.Tensor | None, spikes: torch.Tensor) -> bool:
    """Whether :func:`spike_stage` writes its spikes into ``keep`` too: bool, same shape."""
    return keep is not None and keep.dtype == torch.bool and keep.shape == spikes.shape


CHUNK_ELEMENTS = 2**16  # neurons per chunk on the CPU: 256 KiB of float32 membrane


def _membrane_steps(
    drive: torch.Tensor,
    held: bool,
    out: torch.Tensor | None,
    keep_v: int,
    th: int,
    check: bool,
    gain: int = 1,
) -> int:
    """The T steps of :func:`_lif_float` on one chunk, in place, adding ``gain * drive`` per
    step (integers; ``gain`` a power of two, so exact); spikes into ``out`` [T, n, ...];
    returns the membrane overflow count. ``out`` None (a per-step ``drive``, ``gain`` 1: the
    caller's scratch): :func:`_membrane_in_place`."""
    # 0-dim tensors, exact (< 2^24 in float32, < 2^36 in float64): a Python number would be
    # wrapped anew at every call
    thr = torch.tensor(th, dtype=drive.dtype)
    divisor = _divisor(keep_v, drive.dtype)
    c = keep_v / DECAY_UNITY  # exact: keep_v * 2^-12
    if out is None:
        return _membrane_in_place(drive, keep_v, thr, divisor, c, check)
    steps = out.shape[0]
    v = (drive if held else drive[0]) * gain
    membrane = 0
    for t in range(steps):
        if t:
            d = drive if held else drive[t]
            if not keep_v:
                v.copy_(d).mul_(gain)
            else:
                _decay_(v, divisor, c).add_(d, alpha=gain)
        if check and _peak(v) > STATE_MAX:
            membrane += int((v.abs() > STATE_MAX).sum())
            v.clamp_(-STATE_MAX, STATE_MAX)
        s = out[t]
        torch.gt(v, thr, out=s)
        if t + 1 < steps:
            v.addcmul_(v, s, value=-1)  # reset: v - v = 0 exactly
    return membrane


def _membrane_in_place(
    drive: torch.Tensor,
    keep_v: int,
    thr: torch.Tensor,
    divisor: torch.Tensor | None,
    c: float,
    check: bool,
) -> int:
    """The T steps on a per-step drive [T, n, ...] that becomes the spikes: step t's membrane
    is ``drive[t] + trunc(v_{t-1} keep / 4096)``, computed in ``drive[t]``; then ``w =
    trunc(v_t keep / 4096)`` (the next step's share, one chunk of scratch), ``drive[t] = v_t >
    th`` (the spikes, in place: what the next synapse reads, no buffer of their own), ``w -=
    w s`` (the reset: ``trunc(0) = 0``, so masking after the decay is the same) and
    ``drive[t + 1] += w``. Four passes a step, as before, and no spike buffer to write."""
    steps = drive.shape[0]
    w = torch.empty_like(drive[0]) if keep_v and steps > 1 else None
    membrane = 0
    for t in range(steps):
        v = drive[t]
        if check and _peak(v) > STATE_MAX:
            membrane += int((v.abs() > STATE_MAX).sum())
            v.clamp_(-STATE_MAX, STATE_MAX)
        last = t + 1 == steps
        if w is not None and not last:
            if divisor is not None:
                torch.div(v, divisor, rounding_mode="trunc", out=w)
            else:
                torch.mul(v, c, out=w).trunc_()
        torch.gt(v, thr, out=v)  # the spikes, 0/1, over the membrane
        if w is not None and not last:
            w.addcmul_(w, v, value=-1)
            drive[t + 1].add_(w)
    return membrane


def _divisor(keep_v: int, dtype: torch.dtype) -> torch.Tensor | None:
    """``4096 / keep`` when ``keep`` divides 4096 (a power of two: ``v / 2^k`` truncated, one
    exact pass), as a 0-dim tensor; else None."""
    if keep_v and DECAY_UNITY % keep_v == 0:
        return torch.tensor(DECAY_UNITY // keep_v, dtype=dtype)
    return None


def _decay_(v: torch.Tensor, divisor: torch.Tensor | None, c: float) -> torch.Tensor:
    """``v = trunc(v keep / 4096)`` in place: one exact division when ``keep`` divides 4096,
    else an exact product (``c = keep 2^-12``) and a truncation."""
    if divisor is not None:
        return v.div_(divisor, rounding_mode="trunc")
    return v.mul_(c).trunc_()


def _peak(x: torch.Tensor) -> float:
    """``max |x|``, read in memory order (a reduction over a permuted view is 5x slower)."""
    if not x.numel():
        return 0.0
    order = sorted(range(x.dim()), key=lambda d: x.stride(d), reverse=True)
    y = x.permute(order)
    lo, hi = torch.aminmax(y.reshape(-1) if y.is_contiguous() else y)
    return max(-float(lo), float(hi))


def _steps_like(x: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """An empty [steps, *x.shape] whose every step is laid out as ``x`` (channels last or
    contiguous)."""
    cl = x.dim() == 4 and not x.is_contiguous()
    if cl and x.is_contiguous(memory_format=torch.channels_last):
        flat = torch.empty(
            (steps * x.shape[0], *x.shape[1:]),
            dtype=dtype,
            device=x.device,
            memory_format=torch.channels_last,
        )
        return flat.view(steps, *x.shape)
    return torch.empty((steps, *x.shape), dtype=dtype, device=x.device)


def per_neuron_bias(bias: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """A layer's bias (per channel of a [C, H, W] map, else per neuron) as int64 of ``shape``."""
    b = torch.from_numpy(np.asarray(bias, dtype=np.int64))
    return b.view(-1, 1, 1).expand(shape) if len(shape) == 3 else b.reshape(shape)


def readout_membrane(
    a_steps: torch.Tensor, q: QStage, vth: int
) -> tuple[torch.Tensor, dict[str, int]]:
    """An LI / Integrator readout on Loihi: Lava's bit-accurate LIF with no current memory
    (``du = 4095``) and a threshold it must never reach (``vth``: the 17-bit maximum), whose
    membrane is the output. Per step ``u = a << 6`` (24-bit, wraps),
    ``v = trunc(v * (4096 - dv) / 4096) + u + (bias << 6)`` (24-bit, saturates; ``dv = 0``: the
    Integrator). Returns ``v`` per step [T, N, ...] (int64, units of ``a << 6``) and overflow
    counts; ``readout_threshold`` counts steps where ``v`` passed ``vth << 6`` (Lava's LIF
    would spike and zero it, as this does)."""
    shape = a_steps.shape[2:]
    bias = per_neuron_bias(q.bias, tuple(shape)).to(a_steps.device) << ACT_SHIFT
    keep_v = DECAY_UNITY - int(q.dv)
    th = int(vth) << ACT_SHIFT
    v = torch.zeros(a_steps.shape[1:], dtype=torch.int64, device=a_steps.device)
    over = {"synaptic_input": 0, "current": 0, "membrane": 0, "readout_threshold": 0}
    out = []
    for t in range(a_steps.shape[0]):
        a = a_steps[t].to(torch.int64)
        over["synaptic_input"] += int((a.abs() > A_MAX).sum())
        u = a << ACT_SHIFT
        over["current"] += int((u.abs() > STATE_MAX).sum())
        v = decay_fixed(v, keep_v) + wrap_current(u) + bias
        over["membrane"] += int((v.abs() > STATE_MAX).sum())
        v = v.clamp(-STATE_MAX, STATE_MAX)
        fired = v > th
        over["readout_threshold"] += int(fired.sum())
        v = v.masked_fill(fired, 0)
        out.append(v)
    return torch.stack(out), over


def round_input(x: torch.Tensor, scale: float) -> tuple[torch.Tensor, int]:
    """The image as the chip receives it: 24-bit graded spikes ``round(x * scale)``, and how
    many values left that range (the one place the input is rounded)."""
    xi = x.to(torch.float64, copy=True).mul_(scale).round_()
    if _peak(xi) <= INPUT_MAX:  # one pass proves nothing is out of range
        return xi, 0
    return xi.clamp(-INPUT_MAX, INPUT_MAX), int((xi.abs() > INPUT_MAX).sum())


def stage_inputs(prev: torch.Tensor, q: QStage) -> torch.Tensor:
    """[T, N, ...] spikes -> [T*N, ...] float32 (0/1) for the synapse."""
    return prev.reshape(-1, *prev.shape[2:]).float()


def run_stage(
    q: QStage, inp: torch.Tensor, static: bool, T: int, peak: float = 1.0
) -> torch.Tensor:
    """Synaptic input per step [T, N, ...]. ``static``: the graded network input, ``[N, ...]``
    held at every step (computed once, returned expanded: stride 0 over steps) or ``[N, T,
    ...]`` a value per step (float64, exact); else the previous layer's spikes (float32), 0/1
    or counts of at most ``peak`` (a multi-spike layer's graded spikes)."""
    if static:
        drive = Drive.of(inp, q.in_shape)
        flat = drive.flat(inp)
        a = _synapse(q, flat, float(flat.abs().max()) if flat.numel() else 0.0).double()
        if drive is Drive.PER_STEP:
            return a.reshape(inp.shape[0], T, *a.shape[1:]).transpose(0, 1)
        return a.unsqueeze(0).expand(T, *a.shape)
    a = _synapse(q, prev_flat(inp), max(float(peak), 1.0))  # float32, or float64 if needed
    return a.reshape(T, -1, *a.shape[1:])


def prev_flat(prev: torch.Tensor) -> torch.Tensor:
    """[T, N, ...] 0/1 spikes -> [T*N, ...] (any dtype; the synapse converts)."""
    return prev.reshape(-1, *prev.shape[2:])


def with_gate(q: QStage, a: torch.Tensor) -> torch.Tensor:
    x = a.double() + torch.from_numpy(q.bias.astype(np.float64)).to(a.device).view(1, 1, -1, 1, 1)
    return gate_fixed(q, x.reshape(-1, *x.shape[2:])).reshape(x.shape)
