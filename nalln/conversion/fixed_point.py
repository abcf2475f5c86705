r"""Loihi fixed point: quantisation with per-layer calibration, and a bit-exact emulator.

Lava's bit-accurate LIF (``PyLifModelBitAcc`` / ``PyLifResetModelBitAcc``) computes, per step,
with integer synaptic input ``a`` (the conv/dense output) and 12-bit decays::

    u = (a << 6)                                  # du = 4095: no current memory; 24-bit, wraps
    v = trunc(v * (4096 - dv) / 4096) + u + (bias_mant << 6)   # 24-bit, saturates
    spike if v > (vth << 6); then v = 0

A float layer ``I = W s + b`` with threshold ``v_th`` maps onto it with one scale ``S`` per
layer: ``a = round(W S) s``, ``bias_mant = round(b S)``, ``vth = round(v_th S)``,
``dv = round(4096 dt/tau)``. Weights are 8-bit: conv ``[-128, 127]``; dense even values in
``[-254, 254]`` (Lava truncates the LSB of mixed-sign dense weights). The image enters as 24-bit
graded spikes ``round(x * s_in)``, so the stem's scale is ``S = s_in * alpha``.

Calibration (greedy, layer by layer, on training images): each layer receives the spikes of the
already-quantised layers before it; for a grid of weight scales (``alpha = c * 127 / max|W|``,
``c >= 1`` clips the largest weights to gain resolution for the rest) and thresholds
(``vth = round(v_th S (1 + d))``, small ``d`` compensates the truncating decay) it simulates the
layer and keeps the setting whose spikes agree best with the float reference, among those that
never overflow (synaptic input ``|a| < 2^17`` so that ``a << 6`` fits the 24-bit current,
membrane within 24 bits, ``|bias_mant| < 2^12``, ``vth < 2^17``). The readout keeps the scale
with the best top-1 agreement. :func:`emulate` reproduces Lava's integer arithmetic exactly
(the tests compare it with real Lava runs spike for spike) and counts overflows per layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nalln.conversion.export import GateSpec
from nalln.conversion.plan import Neuron, Plan, Stage, Synapse
from nalln.conversion.reference import Trace, run_plan
from nalln.errors import NallnError

ACT_SHIFT = 6
DECAY_UNITY = 4096
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
STEM_HEADROOM = 2.0  # calibration max of the stem current uses half the 17-bit input range


@dataclass
class QStage:
    """One quantised synapse -> [gate] -> neuron (or readout) stage."""

    name: str
    kind: str
    weight: np.ndarray  # int64, torch layout
    bias: np.ndarray  # int64 per output channel, in units of ``a``
    scale: float  # S: float current = a / S
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    gate: GateSpec | None = None
    neuron: Neuron | None = None
    vth: int = 0
    dv: int = 0
    calibration: dict[str, Any] = field(default_factory=dict)


@dataclass
class QuantPlan:
    plan: Plan
    input_scale: float
    stages: list[QStage]
    report: dict[str, Any] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        """Per-layer calibration summary (what the report and docs show)."""
        return [
            {
                "layer": q.name,
                "kind": q.kind,
                "scale": q.scale,
                "vth": q.vth,
                "dv": q.dv,
                "max_abs_weight": int(np.abs(q.weight).max()),
                **q.calibration,
            }
            for q in self.stages
        ]


# --- quantisation -------------------------------------------------------------------------------


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


def _w_range(kind: str) -> int:
    return CONV_W[1] if kind == "conv" else DENSE_W[1]


def _current(q: QStage, x: torch.Tensor) -> torch.Tensor:
    """Integer synaptic input ``a`` for inputs ``x`` [N, *in_shape], exact: float64 for the
    graded image; float32 for spikes (|a| <= 254 * fan-in < 2^24, so every sum is exact)."""
    w = torch.from_numpy(q.weight).to(x.dtype)
    if q.kind == "conv":
        return F.conv2d(x, w, None, stride=q.stride, padding=q.padding, groups=q.groups)
    return F.linear(x.reshape(x.shape[0], -1), w)


def _gate_fixed(q: QStage, x: torch.Tensor) -> torch.Tensor:
    """What our Lava SE process computes: gate in float on (W, H, C) maps, product rounded."""
    from nalln.conversion.se_gate import se_gate_numpy

    xs = x.numpy()
    out = np.empty_like(xs)
    g = q.gate
    for n in range(xs.shape[0]):
        gate = se_gate_numpy(xs[n].transpose(2, 1, 0) / q.scale, g.w1, g.b1, g.w2, g.b2)
        out[n] = np.rint(xs[n] * gate[:, None, None])
    return torch.from_numpy(out)


def _lif_fixed(
    a_steps: torch.Tensor, q: QStage, bias: np.ndarray | None, vth: int
) -> tuple[torch.Tensor, dict[str, int]]:
    """Lava's fixed-point LIF over T steps from rest; spikes [T, N, ...] and overflow counts."""
    shape = a_steps.shape[2:]
    bias_v = torch.zeros(()) if bias is None else torch.from_numpy(bias.astype(np.int64))
    if bias is not None and len(shape) == 3:
        bias_v = bias_v.view(-1, 1, 1)
    bias_v = bias_v.to(torch.int64) << ACT_SHIFT
    v = torch.zeros(a_steps.shape[1:], dtype=torch.int64)
    th = int(vth) << ACT_SHIFT
    over = {"synaptic_input": 0, "membrane": 0}
    out = []
    for t in range(a_steps.shape[0]):
        a = a_steps[t].to(torch.int64)
        over["synaptic_input"] += int((a.abs() > A_MAX).sum())
        dec = torch.div(v * (DECAY_UNITY - q.dv), DECAY_UNITY, rounding_mode="trunc")
        v = dec + (a << ACT_SHIFT) + bias_v
        bad = v.abs() > STATE_MAX
        over["membrane"] += int(bad.sum())
        v = v.clamp(-STATE_MAX, STATE_MAX)
        s = v > th
        v = v.masked_fill(s, 0)
        out.append(s)
    return torch.stack(out), over


def _input_int(x: torch.Tensor, scale: float) -> tuple[torch.Tensor, int]:
    xi = torch.round(x.double() * scale)
    return xi.clamp(-INPUT_MAX, INPUT_MAX), int((xi.abs() > INPUT_MAX).sum())


def _stage_inputs(prev: torch.Tensor, q: QStage) -> torch.Tensor:
    """[T, N, ...] spikes -> [T*N, ...] float32 (0/1) for the synapse."""
    return prev.reshape(-1, *prev.shape[2:]).float()


def _run_stage(q: QStage, inp: torch.Tensor, static: bool, T: int) -> torch.Tensor:
    """Synaptic input per step [T, N, ...] (the static image is computed once)."""
    if static:
        a = _current(q, inp)
        return a.unsqueeze(0).expand(T, *a.shape)
    a = _current(q, _stage_inputs(inp, q))
    return a.reshape(T, -1, *a.shape[1:])


def _with_gate(q: QStage, a: torch.Tensor) -> torch.Tensor:
    x = a.double() + torch.from_numpy(q.bias.astype(np.float64)).view(1, 1, -1, 1, 1)
    return _gate_fixed(q, x.reshape(-1, *x.shape[2:])).reshape(x.shape)


@dataclass
class Emulation:
    trace: Trace
    overflow: dict[str, dict[str, int]]  # layer -> kind -> count

    @property
    def overflowed(self) -> dict[str, dict[str, int]]:
        return {
            k: {n: c for n, c in v.items() if c}
            for k, v in self.overflow.items()
            if any(v.values())
        }


@torch.no_grad()
def emulate(qp: QuantPlan, x: torch.Tensor) -> Emulation:
    """Bit-exact fixed-point simulation of ``qp`` on normalised images ``x`` [N, C, H, W]."""
    T = qp.plan.num_steps
    xi, in_over = _input_int(x, qp.input_scale)
    h: torch.Tensor = xi
    spikes: dict[str, torch.Tensor] = {}
    overflow: dict[str, dict[str, int]] = {}
    outputs = None
    for k, q in enumerate(qp.stages):
        a = _run_stage(q, h, k == 0, T)
        over = {"input": in_over} if k == 0 else {}
        if q.neuron is None:
            total = a.sum(0) + T * torch.from_numpy(q.bias.astype(np.float64))
            over["readout"] = int((total.abs() > A_MAX).sum())
            outputs = (a + torch.from_numpy(q.bias.astype(np.float64))) / q.scale
            overflow[q.name] = over
            break
        if q.gate is not None:
            a = _with_gate(q, a)
            s, o = _lif_fixed(a, q, None, q.vth)
        else:
            s, o = _lif_fixed(a, q, q.bias, q.vth)
        overflow[q.name] = {**over, **o}
        spikes[q.name] = s
        h = s
    if outputs is None:
        outputs = h.reshape(T, h.shape[1], -1).float()
    return Emulation(Trace(outputs.reshape(T, x.shape[0], -1).float(), spikes), overflow)


def check_overflow(em: Emulation, what: str) -> None:
    """One-line error naming every layer that overflowed (nothing is clipped silently)."""
    bad = em.overflowed
    if bad:
        parts = "; ".join(
            f"{layer}: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
            for layer, kinds in bad.items()
        )
        raise NallnError(
            f"fixed-point overflow on {what} ({parts} values out of range); recalibrate with "
            "more or more typical calibration images (--calibration N)"
        )


# --- calibration --------------------------------------------------------------------------------


def _base(stage: Stage) -> dict[str, Any]:
    s: Synapse = stage.synapse
    return dict(
        name=stage.name,
        kind=s.kind,
        in_shape=tuple(s.in_shape),
        out_shape=tuple(s.out_shape),
        stride=tuple(s.stride),
        padding=tuple(s.padding),
        groups=int(s.groups),
        gate=stage.gate,
        neuron=stage.neuron,
    )


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a == b).double().mean())


def _stem_scale(stage: Stage, x: torch.Tensor) -> float:
    """Largest stem scale S keeping the calibration current within half the 17-bit range."""
    s = stage.synapse
    w = torch.from_numpy(s.weight)
    cur = (
        F.conv2d(x.double(), w, None, stride=s.stride, padding=s.padding, groups=s.groups)
        if s.kind == "conv"
        else F.linear(x.double().flatten(1), w)
    )
    peak = float(cur.abs().max()) or 1.0
    scale = A_MAX / (STEM_HEADROOM * peak)
    bmax = float(np.abs(s.bias).max())
    if bmax > 0:
        scale = min(scale, BIAS_MAX / bmax)
    return scale


def _candidates(stage: Stage, k: int) -> list[float]:
    s = stage.synapse
    wmax = float(np.abs(s.weight).max()) or 1.0
    bmax = float(np.abs(s.bias).max())
    factors = list(STEM_FACTORS if k == 0 else CLIP_FACTORS)
    if k > 0 and bmax > 0:  # the 13-bit bias mantissa caps the scale
        cap = BIAS_MAX / bmax / (_w_range(s.kind) / wmax)
        if cap < max(factors):
            factors = [f for f in factors if f <= cap] or [cap * 0.999]
    return factors


def _calibrate_stage(
    stage: Stage,
    inp: torch.Tensor,
    ref: torch.Tensor | None,
    T: int,
    k: int,
    stem_scale: float | None,
    ref_out: torch.Tensor | None,
) -> tuple[QStage, float | None]:
    """Best quantisation of one layer, judged on its own error: it receives the float
    reference's input (image or previous layer's spikes), so the choice is not confounded by
    errors of earlier layers (which a spiking network amplifies)."""
    s = stage.synapse
    wmax = float(np.abs(s.weight).max()) or 1.0
    best = None
    for c in _candidates(stage, k):
        alpha = c * _w_range(s.kind) / wmax  # weight scale: w_int = round(w * alpha)
        # the stem's input is graded: S = s_in * alpha, with S fixed by the input range
        scale = stem_scale if stem_scale is not None else alpha
        in_scale = scale / alpha if stem_scale is not None else None
        w_int, clipped = quantise_weight(s.weight, alpha, s.kind)
        bias = np.rint(s.bias * scale).astype(np.int64)
        if np.abs(bias).max(initial=0) > BIAS_MAX:
            continue
        q = QStage(**_base(stage), weight=w_int, bias=bias, scale=scale)
        q.dv = int(round(stage.neuron.decay * DECAY_UNITY)) if stage.neuron else 0
        if stem_scale is not None:
            a = _run_stage(q, _input_int(inp, in_scale)[0], True, T)
        else:
            a = _run_stage(q, inp, False, T)
        if stage.neuron is None:
            total = a.sum(0) + T * torch.from_numpy(bias.astype(np.float64))
            if int((total.abs() > A_MAX).sum()):
                continue
            logits = ((a + torch.from_numpy(bias.astype(np.float64))) / scale).mean(0)
            mse = float(((logits - ref_out) ** 2).mean())
            top1 = float((logits.argmax(1) == ref_out.argmax(1)).double().mean())
            key = (mse, -top1, abs(c - 1.0))
            if best is None or key < best[0]:
                q.calibration = {
                    "clip_factor": c,
                    "weights_clipped": clipped,
                    "logit_mse_own": mse,
                    "top1_agreement_own": top1,
                }
                best = (key, q, in_scale)
            continue
        if int((a.abs() > A_MAX).sum()):
            continue
        if q.gate is not None:
            a = _with_gate(q, a)
        for d in THRESHOLD_TWEAKS:
            vth = int(round(stage.neuron.v_th * scale * (1 + d)))
            if vth > VTH_MAX or vth < 1:
                continue
            spk, over = _lif_fixed(a, q, None if q.gate is not None else bias, vth)
            if any(over.values()):
                continue
            key = (-_agreement(spk, ref), abs(d), abs(c - 1.0))
            if best is None or key < best[0]:
                qq = QStage(**{**q.__dict__})
                qq.vth = vth
                qq.calibration = {
                    "clip_factor": c,
                    "threshold_tweak": d,
                    "weights_clipped": clipped,
                    "spike_agreement_own": -key[0],
                }
                best = (key, qq, in_scale)
    if best is None:
        raise NallnError(
            f"fixed-point overflow in layer {stage.name!r}: no weight scale keeps its synaptic "
            "input within 17 bits, its membrane within 24 bits and its bias within 13 bits on "
            "the calibration images"
        )
    return best[1], best[2]


@torch.no_grad()
def calibrate(plan: Plan, x: torch.Tensor, progress: bool = False) -> QuantPlan:
    """Quantise ``plan`` for Loihi, calibrating every layer on normalised images ``x``."""
    T = plan.num_steps
    ref = run_plan(plan, x, dtype=torch.float32)  # the torch model's precision
    ref_logits = ref.outputs.mean(0).double()
    stem_scale = _stem_scale(plan.stages[0], x)
    stages: list[QStage] = []
    inp: torch.Tensor = x.double()
    input_scale = 1.0
    bar = tqdm(plan.stages, desc="calibrating fixed point", disable=not progress, leave=False)
    for k, stage in enumerate(bar):
        q, in_scale = _calibrate_stage(
            stage,
            inp,
            ref.spikes.get(stage.name),
            T,
            k,
            stem_scale if k == 0 else None,
            ref_logits if stage.neuron is None else None,
        )
        if k == 0:
            input_scale = float(in_scale)
        stages.append(q)
        if stage.neuron is None:
            break
        inp = ref.spikes[stage.name]
    qp = QuantPlan(plan, input_scale, stages)
    em = emulate(qp, x)
    check_overflow(em, "the calibration images")
    for q in stages:  # agreement of the whole fixed-point network, layer by layer
        if q.neuron is not None:
            q.calibration["spike_agreement_network"] = _agreement(
                em.trace.spikes[q.name], ref.spikes[q.name]
            )
    qp.report = {
        "calibration_images": int(x.shape[0]),
        "objective": "per layer, on the float reference's input: spike agreement (neurons), "
        "logit MSE (readout)",
        "top1_agreement_calibration": float(
            (em.trace.logits.argmax(1) == ref.logits.argmax(1)).double().mean()
        ),
        "layers": qp.table(),
    }
    return qp


@torch.no_grad()
def weight_noise_sensitivity(
    plan: Plan, x: torch.Tensor, bits: tuple[int, ...] = (8, 12, 16), seed: int = 0
) -> dict[int, float]:
    """Top-1 agreement of the *float* network when every weight gets uniform noise of +-1/2 LSB
    of a ``bits``-bit per-layer quantiser: how much of the fixed-point loss is the network's own
    sensitivity (a spike flipped early changes every layer after it) rather than calibration."""
    from dataclasses import replace

    ref = run_plan(plan, x, dtype=torch.float32).logits.argmax(1)
    rng = np.random.default_rng(seed)
    out = {}
    for b in bits:
        stages = []
        for st in plan.stages:
            w = st.synapse.weight
            lsb = float(np.abs(w).max()) / (2 ** (b - 1) - 1)
            noisy = w + rng.uniform(-0.5, 0.5, w.shape) * lsb
            stages.append(replace(st, synapse=replace(st.synapse, weight=noisy)))
        got = run_plan(replace(plan, stages=stages), x, dtype=torch.float32).logits.argmax(1)
        out[b] = float((got == ref).double().mean())
    return out


# --- files --------------------------------------------------------------------------------------


def save_quant_plan(qp: QuantPlan, folder: str | Path) -> dict[str, Path]:
    """Integer parameters as safetensors plus a JSON description (no pickle)."""
    from safetensors.numpy import save as st_save

    from nalln.io import write_bytes, write_json

    folder = Path(folder)
    tensors = {}
    layers = []
    for q in qp.stages:
        tensors[f"{q.name}/weight"] = np.ascontiguousarray(q.weight.astype(np.int32))
        tensors[f"{q.name}/bias"] = np.ascontiguousarray(q.bias.astype(np.int32))
        d = {k: v for k, v in asdict(q).items() if k not in ("weight", "bias", "gate", "neuron")}
        d["gate"] = q.gate.name if q.gate else None
        d["neuron"] = q.neuron.name if q.neuron else None
        layers.append(d)
    spec = {
        "format": "nalln-loihi-fixed/1",
        "arithmetic": (
            "a = W_int * s (conv: 8-bit; dense: even 8-bit mantissa x 2); per step u = a << 6; "
            "v = trunc(v * (4096 - dv) / 4096) + u + (bias << 6); spike if v > (vth << 6); "
            "v = 0 after a spike; float current = a / scale; input = round(x * input_scale)"
        ),
        "input_scale": qp.input_scale,
        "layers": layers,
        "report": qp.report,
    }
    return {
        "fixed_point.json": write_json(folder / "fixed_point.json", spec),
        "fixed_point.safetensors": write_bytes(
            folder / "fixed_point.safetensors", st_save(tensors)
        ),
    }
