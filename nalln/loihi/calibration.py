"""Per-layer calibration of a float plan onto Loihi's fixed point (no retraining).

Greedy, layer by layer, on training images: each layer receives the float reference's input
(image or the previous layer's spikes); for a grid of weight scales (``alpha = c * 127 /
max|W|``, ``c >= 1`` clips the largest weights to gain resolution for the rest) and thresholds
(``vth = round(v_th S (1 + d))``, small ``d`` compensates the truncating decay) it simulates the
layer and keeps the setting whose spikes agree best with the float reference, among those that
never overflow. The readout keeps the scale with the best logit MSE. A recurrent layer's loop
weights share its scale ``S`` (both currents add in the same units): by default the loop Dense
gets the smallest weight exponent ``e >= 0`` that fits its weights in 8 bits on that ``S``
(``recurrent_exp=False``: ``e = 0``, and ``S`` is capped by the loop weights, as netx needs). The
layer is simulated with its loop closed (its own fixed-point spikes of the previous step), as
it runs. How much of the 24-bit range the stem's calibration peaks may fill is a
:class:`StemRange` (``GRAPH_RANGE`` by default: the float layer's own current and membrane
peaks, each with headroom 2; ``RUN_RANGE`` for nalln's own runs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import StrEnum

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nalln.errors import NallnError
from nalln.ir.drive import Drive
from nalln.ir.plan import PLAN_INPUT, Plan, Stage
from nalln.ir.reference import delay_trace, run_plan
from nalln.loihi.arithmetic import (
    A_MAX,
    BIAS_MAX,
    CLIP_FACTORS,
    DECAY_UNITY,
    DENSE_W,
    STEM_FACTORS,
    THRESHOLD_TWEAKS,
    VTH_MAX,
    current_du,
    lif_fixed,
    narrow,
    quantise_recurrent,
    quantise_weight,
    round_input,
    run_stage,
    w_range,
    with_gate,
)
from nalln.loihi.emulator import agreement, check_overflow, emulate, readout_outputs
from nalln.loihi.quant_plan import BiasDrive, QStage, QSynapse, QuantPlan, bias_in_current

READOUT_FACTORS = (0.75, 0.5, 0.25, 0.125, 0.0625)  # below 1: an LI/I membrane that would overflow
STEM_HEADROOM = 2.0  # calibration max of the stem current uses half the 17-bit input range


class MembraneBound(StrEnum):
    """How the stem's calibration bounds its 24-bit current and membrane."""

    BUILD_UP = "build-up"  # the peak ``|W x|`` held for T steps: ``peak * build_up``, no bias
    SIMULATED = "simulated"  # the float layer's own ``|u|``, ``|v|`` on the calibration inputs


@dataclass(frozen=True)
class StemRange:
    """How much of Loihi's registers the stem's largest calibration values may fill; the rest
    is headroom for inputs the calibration did not see. The stem's scale ``S`` is the largest
    with ``current_headroom * max|a| <= A_MAX`` (the 17-bit synaptic input) and
    ``membrane_headroom * max(|u|, |v|) <= A_MAX`` (the 24-bit current and membrane, in units
    of ``a``), the peaks as ``membrane`` bounds them."""

    current_headroom: float = STEM_HEADROOM
    membrane_headroom: float = STEM_HEADROOM
    membrane: MembraneBound = MembraneBound.SIMULATED


# Foreign graphs (the default): the membrane's own peak (bias, loop and resets included) gets
# the same headroom as the current. RUN_RANGE's bound without headroom puts a slow membrane
# (snnTorch's beta = 0.8 over 8 steps builds up 4.2x) exactly at the 24-bit limit on the
# calibration inputs; the bias pushes a neuron over, and only clipped stem weights survive
# (docs/conversion.md, "Where snntorch_conv_lif lost its fixed-point agreement").
GRAPH_RANGE = StemRange()
# nalln's own runs: the bound every measured NeurALLNet figure and fine-tuned grid was made with,
# ``S = A_MAX / (max(2, build_up) max|W x|)`` (tau = 2 steps, T = 4: build-up 1.875 < 2, so the
# current's headroom is what binds there).
RUN_RANGE = StemRange(membrane_headroom=1.0, membrane=MembraneBound.BUILD_UP)


def _base_alpha(stage: Stage, exponent: bool) -> float:
    """The weight scale at clip factor 1: the forward weights' 8-bit range, and (a recurrent
    layer without a weight exponent) the loop weights' too, as both share the layer's scale."""
    s = stage.synapse
    alpha = w_range(s.kind) / (float(np.abs(s.weight).max()) or 1.0)
    if stage.recurrent is not None and not exponent:
        alpha = min(alpha, DENSE_W[1] / (float(np.abs(stage.recurrent.weight).max()) or 1.0))
    for m in stage.merged:  # a merged conv has no weight exponent in our Lava conv: it caps S
        if m.kind == "conv":
            alpha = min(alpha, w_range("conv") / (float(np.abs(m.weight).max()) or 1.0))
    return alpha


def _merged(stage: Stage, scale: float) -> tuple[tuple[QSynapse, ...], float]:
    """The merged synapses on the population's scale ``S``, so their currents add in the same
    units: a dense one as even 8-bit mantissas times its own ``2^e`` (the smallest ``e >= 0``
    that fits, as a loop's), a conv one with ``e = 0`` (``S`` is capped for it); and the
    largest clipped fraction."""
    out, clipped = [], 0.0
    for m in stage.merged:
        if m.kind == "conv":
            w, c = quantise_weight(m.weight, scale, "conv")
            e = 0
        else:
            w, e, c = quantise_recurrent(m.weight, scale, True)
        out.append(QSynapse(m, w, e))
        clipped = max(clipped, c)
    return tuple(out), clipped


def _drives(stage: Stage, scale: float, exponent: bool) -> tuple[BiasDrive, ...]:
    """The biases that enter the current, on the layer's scale, as even 8-bit mantissas times
    ``2^e`` (the always-on neuron's dense column)."""
    out = []
    if bias_in_current(stage):
        vals, e, _ = quantise_recurrent(stage.synapse.bias[:, None], scale, exponent)
        out.append(BiasDrive(vals[:, 0], e, 0))
    if stage.recurrent is not None and np.any(stage.recurrent.bias != 0):
        vals, e, _ = quantise_recurrent(stage.recurrent.bias[:, None], scale, exponent)
        out.append(BiasDrive(vals[:, 0], e, 1))
    return tuple(out)


def _build_up(decay: float, T: int) -> float:
    return float(sum((1.0 - decay) ** t for t in range(T)))


def _float_peaks(stage: Stage, x: torch.Tensor, spikes: torch.Tensor, T: int) -> tuple:
    """``max|a|`` and ``max(|u|, |v|)`` of the float stem as Loihi splits it (``a``: the
    synaptic input with the loop and a bias that rides in the current; ``u``: the decaying
    current; ``v``: the membrane before its reset, which adds any other bias), on the
    calibration inputs, the loop closed and the resets taken from the reference's ``spikes``."""
    s, n, ro = stage.synapse, stage.neuron, stage.readout
    w = torch.from_numpy(s.weight)
    xs = Drive.of(x, s.in_shape).step_major(x.double(), T)
    b = torch.from_numpy(s.bias).double().view(-1, *([1] * (len(s.out_shape) - 1)))
    b_cur = b if bias_in_current(stage) else torch.zeros_like(b)
    peak_a = peak_uv = 0.0
    u = v = torch.zeros(())
    for t in range(T):
        n_img = len(xs[t])
        a = (
            F.conv2d(
                xs[t].reshape(n_img, *s.in_image),
                w,
                None,
                stride=s.stride,
                padding=s.padding,
                groups=s.groups,
            ).reshape(n_img, *s.out_shape)  # a Conv1d's [C, 1, L'] as its population [C, L']
            if s.kind == "conv"
            else F.linear(xs[t].flatten(1), w)
        ) + b_cur
        if stage.recurrent is not None and t:
            r = stage.recurrent
            a = a + F.linear(spikes[t - 1].double().flatten(1), torch.from_numpy(r.weight))
            a = a + torch.from_numpy(r.bias).double()
        peak_a = max(peak_a, float(a.abs().max()))
        if n is None:
            if ro is not None:  # an LI / Integrator membrane sums its current over the window
                v = (1 - ro.decay) * v + a
                peak_uv = max(peak_uv, float(v.abs().max()))
            continue
        u = (1 - n.current_decay) * u + a
        v = (1 - n.decay) * v + u + (b - b_cur)
        peak_uv = max(peak_uv, float(u.abs().max()), float(v.abs().max()))
        v = torch.where(spikes[t].bool(), torch.zeros_like(v), v)
    return peak_a, peak_uv or peak_a


def _stem_scale(
    stage: Stage,
    x: torch.Tensor,
    T: int,
    exponent: bool,
    room: StemRange,
    spikes: torch.Tensor | None,
) -> float:
    """Largest stem scale S within ``room``'s share of the 17-bit synaptic input and the 24-bit
    current and membrane on the calibration inputs. ``MembraneBound.BUILD_UP``: a slowly
    decaying neuron (dt/tau < 1/2) driven by its peak for T steps reaches ``peak * sum_t (1 -
    dt/tau)^t``, more than twice the peak (a CubaLIF's current builds up the same way first; a
    recurrent layer's loop adds at most its largest row of ``|W_rec|``). Without a weight
    exponent the loop weights must fit 8 bits on the same S."""
    s = stage.synapse
    if room.membrane is MembraneBound.SIMULATED:
        peak, state = _float_peaks(stage, x, spikes, T)
    else:
        w = torch.from_numpy(s.weight)
        flat = Drive.of(x, s.in_shape).flat(x)  # every value the stem receives
        cur = (
            F.conv2d(
                flat.double().reshape(len(flat), *s.in_image),
                w,
                None,
                stride=s.stride,
                padding=s.padding,
                groups=s.groups,
            )
            if s.kind == "conv"
            else F.linear(flat.double().flatten(1), w)
        )
        peak = float(cur.abs().max())
        if stage.recurrent is not None:
            peak += float(np.abs(stage.recurrent.weight).sum(1).max())
        n, ro = stage.neuron, stage.readout
        build_up = 1.0 if n is None else _build_up(n.decay, T) * _build_up(n.current_decay, T)
        if ro is not None:  # an LI / Integrator membrane sums its current over the window
            build_up = _build_up(ro.decay, T)
        state = peak * build_up
    peak, state = peak or 1.0, state or 1.0
    scale = A_MAX / max(room.current_headroom * peak, room.membrane_headroom * state)
    if stage.recurrent is not None and not exponent:
        scale = min(scale, DENSE_W[1] / (float(np.abs(stage.recurrent.weight).max()) or 1.0))
    bmax = 0.0 if bias_in_current(stage) else float(np.abs(s.bias).max())
    if bmax > 0:
        scale = min(scale, BIAS_MAX / bmax)
    return scale


def _candidates(stage: Stage, k: int, exponent: bool) -> list[float]:
    s = stage.synapse
    bmax = 0.0 if bias_in_current(stage) else float(np.abs(s.bias).max())
    factors = list(STEM_FACTORS if k == 0 else CLIP_FACTORS)
    if stage.readout is not None:  # an integrating membrane may need a smaller scale to fit
        factors += [f for f in READOUT_FACTORS if f < min(factors)]
    if k > 0 and bmax > 0:  # the 13-bit bias mantissa caps the scale
        cap = BIAS_MAX / bmax / _base_alpha(stage, exponent)
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
    exponent: bool = True,
    merged_inp: tuple[torch.Tensor, ...] = (),
) -> tuple[QStage, float | None]:
    """Best quantisation of one layer, judged on its own error: it receives the float
    reference's input (image or previous layer's spikes), so the choice is not confounded by
    errors of earlier layers (which a spiking network amplifies)."""
    s = stage.synapse
    wmax = float(np.abs(s.weight).max()) or 1.0
    best = None
    for c in _candidates(stage, k, exponent):
        # weight scale: w_int = round(w * alpha); the stem's alpha trades weight and input bits
        base = w_range(s.kind) / wmax if stem_scale is not None else _base_alpha(stage, exponent)
        alpha = c * base
        # the stem's input is graded: S = s_in * alpha, with S fixed by the input range
        scale = stem_scale if stem_scale is not None else alpha
        in_scale = scale / alpha if stem_scale is not None else None
        w_int, clipped = quantise_weight(s.weight, alpha, s.kind)
        total_bias = sum(m.bias for m in stage.synapses)  # merged biases add in the neuron
        bias = np.rint(total_bias * scale * (not bias_in_current(stage))).astype(np.int64)
        if np.abs(bias).max(initial=0) > BIAS_MAX:
            continue
        n = stage.neuron
        dv = int(round(n.decay * DECAY_UNITY)) if n else 0
        du = current_du(n.current_decay) if n else current_du(1.0)
        rec, rec_exp = None, 0
        if stage.recurrent is not None:  # the loop's current, on the layer's own scale
            rec, rec_exp, rec_clipped = quantise_recurrent(stage.recurrent.weight, scale, exponent)
            clipped = max(clipped, rec_clipped)
        drives = _drives(stage, scale, exponent)
        merged, m_clipped = _merged(stage, scale)
        clipped = max(clipped, m_clipped)
        q = QStage(stage, w_int, bias, scale, 0, dv, du, rec, rec_exp, drives, merged=merged)
        if n is not None and n.v_min is not None:  # the floor on the layer's scale
            q = replace(q, vmin=int(np.clip(round(n.v_min * scale), -VTH_MAX, VTH_MAX)))
        if stem_scale is not None:
            a = run_stage(q, round_input(inp, in_scale)[0], True, T)
        else:  # 0/1 spikes, or the counts of a multi-spike layer
            a = run_stage(q, inp, False, T, float(inp.max()) if inp.numel() else 1.0)
        for i, m_inp in enumerate(merged_inp):  # a merge: the currents add
            peak = float(m_inp.max()) if m_inp.numel() else 1.0
            a = a.double() + run_stage(q.part(i), m_inp, False, T, max(peak, 1.0)).double()
        if merged_inp:
            a = narrow(a)
        if stage.neuron is None:
            if stage.readout is not None:
                q = replace(q, dv=int(round(stage.readout.decay * DECAY_UNITY)), vth=VTH_MAX)
            outputs, over = readout_outputs(q, a)
            if any(over.values()):
                continue
            logits = outputs.mean(0)
            mse = float(((logits - ref_out) ** 2).mean())
            top1 = float((logits.argmax(1) == ref_out.argmax(1)).double().mean())
            key = (mse, -top1, abs(c - 1.0))
            if best is None or key < best[0]:
                calibration = {
                    "clip_factor": c,
                    "weights_clipped": clipped,
                    "logit_mse_own": mse,
                    "top1_agreement_own": top1,
                }
                best = (key, replace(q, calibration=calibration), in_scale)
            continue
        if int((a.abs() > A_MAX).sum()):
            continue
        if q.gate is not None:
            a = with_gate(q, a)
        for d in THRESHOLD_TWEAKS:
            vth = int(round(stage.neuron.v_th * scale * (1 + d)))
            if vth > VTH_MAX or vth < 1:
                continue
            spk, over = lif_fixed(a, q, None if q.gate is not None else bias, vth)
            if any(over.values()):
                continue
            key = (-agreement(spk, ref), abs(d), abs(c - 1.0))
            if best is None or key < best[0]:
                calibration = {
                    "clip_factor": c,
                    "threshold_tweak": d,
                    "weights_clipped": clipped,
                    "spike_agreement_own": -key[0],
                }
                best = (key, replace(q, vth=vth, calibration=calibration), in_scale)
    if best is None:
        raise NallnError(
            f"fixed-point overflow in layer {stage.name!r}: no weight scale keeps its synaptic "
            "input within 17 bits, its membrane within 24 bits and its bias within 13 bits on "
            "the calibration images"
        )
    return best[1], best[2]


def require_graph_fixed_point(plan: Plan) -> None:
    """What nalln's Loihi fixed point cannot run in a graph, refused by name: the graded input
    read by any synapse but the first layer's, or read through a Delay."""
    for k, st in enumerate(plan.stages):
        for syn in st.synapses:
            if plan.reads(k, syn) == PLAN_INPUT and (
                k or syn is not st.synapse or syn.delay is not None
            ):
                raise NallnError(
                    f"synapse {syn.source!r} reads the graded input "
                    f"{'with a delay' if syn.delay is not None else 'beside the first layer'}; "
                    "nalln's Loihi fixed point feeds the input to the first layer only: run it "
                    "in float"
                )


@torch.no_grad()
def calibrate(
    plan: Plan,
    x: torch.Tensor,
    progress: bool = False,
    *,
    recurrent_exp: bool = True,
    stem_range: StemRange = GRAPH_RANGE,
) -> QuantPlan:
    """Quantise ``plan`` for Loihi, calibrating every layer on normalised images ``x``.
    ``recurrent_exp``: a loop Dense may carry a weight exponent (``weight_exp > 0``), so the
    layer's scale is set by its input; ``False`` keeps every weight an 8-bit integer with
    exponent 0 (what netx's ``dense_rec`` holds), capping the scale by the loop weights.
    ``stem_range``: the headroom the stem's scale leaves (:class:`StemRange`)."""
    require_graph_fixed_point(plan)
    T = plan.num_steps
    ref = run_plan(plan, x, dtype=torch.float32)  # the torch model's precision
    ref_logits = ref.outputs.mean(0).double()
    first = plan.stages[0]
    stem_scale = _stem_scale(first, x, T, recurrent_exp, stem_range, ref.spikes.get(first.name))
    stages: list[QStage] = []
    inp: torch.Tensor = x.double()
    input_scale = 1.0
    bar = tqdm(plan.stages, desc="calibrating fixed point", disable=not progress, leave=False)

    def read(k: int, syn) -> torch.Tensor:  # the float reference's spikes a synapse reads
        return delay_trace(ref.spikes[plan.reads(k, syn)], syn.delay)

    for k, stage in enumerate(bar):
        if k and (stage.synapse.reads is not None or stage.synapse.delay is not None):
            inp = read(k, stage.synapse)
        q, in_scale = _calibrate_stage(
            stage,
            inp,
            ref.spikes.get(stage.name),
            T,
            k,
            stem_scale if k == 0 else None,
            ref_logits if stage.neuron is None else None,
            recurrent_exp,
            tuple(read(k, m) for m in stage.merged),
        )
        if k == 0:
            input_scale = float(in_scale)
        stages.append(q)
        if stage.neuron is None:
            break
        inp = ref.spikes[stage.name]
    qp = QuantPlan(plan, input_scale, tuple(stages))
    em = emulate(qp, x)
    check_overflow(em, "the calibration images")
    stages = [  # agreement of the whole fixed-point network, layer by layer
        q
        if q.neuron is None
        else replace(
            q,
            calibration={
                **q.calibration,
                "spike_agreement_network": agreement(em.trace.spikes[q.name], ref.spikes[q.name]),
            },
        )
        for q in stages
    ]
    qp = replace(qp, stages=tuple(stages))
    return replace(
        qp,
        report={
            "calibration_images": int(x.shape[0]),
            "objective": "per layer, on the float reference's input: spike agreement (neurons), "
            "logit MSE (readout)",
            "stem_range": asdict(stem_range),
            "top1_agreement_calibration": float(
                (em.trace.logits.argmax(1) == ref.logits.argmax(1)).double().mean()
            ),
            "layers": qp.table(),
        },
    )


@torch.no_grad()
def weight_noise_sensitivity(
    plan: Plan, x: torch.Tensor, bits: tuple[int, ...] = (8, 12, 16), seed: int = 0
) -> dict[int, float]:
    """Top-1 agreement of the *float* network when every weight gets uniform noise of +-1/2 LSB
    of a ``bits``-bit per-layer quantiser: how much of the fixed-point loss is the network's own
    sensitivity (a spike flipped early changes every layer after it) rather than calibration."""
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
