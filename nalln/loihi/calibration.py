"""Per-layer calibration of a float plan onto Loihi's fixed point (no retraining).

Greedy, layer by layer, on training images: each layer receives the float reference's input
(image or the previous layer's spikes); for a grid of weight scales (``alpha = c * 127 /
max|W|``, ``c >= 1`` clips the largest weights to gain resolution for the rest) and thresholds
(``vth = round(v_th S (1 + d))``, small ``d`` compensates the truncating decay) it simulates the
layer and keeps the setting whose spikes agree best with the float reference, among those that
never overflow. The readout keeps the scale with the best logit MSE.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nalln.errors import NallnError
from nalln.ir.drive import Drive
from nalln.ir.plan import Plan, Stage
from nalln.ir.reference import run_plan
from nalln.loihi.arithmetic import (
    A_MAX,
    BIAS_MAX,
    CLIP_FACTORS,
    DECAY_UNITY,
    STEM_FACTORS,
    THRESHOLD_TWEAKS,
    VTH_MAX,
    lif_fixed,
    quantise_weight,
    round_input,
    run_stage,
    w_range,
    with_gate,
)
from nalln.loihi.emulator import agreement, check_overflow, emulate
from nalln.loihi.quant_plan import QStage, QuantPlan

STEM_HEADROOM = 2.0  # calibration max of the stem current uses half the 17-bit input range


def _stem_scale(stage: Stage, x: torch.Tensor, T: int) -> float:
    """Largest stem scale S keeping the calibration current within half the 17-bit range, and
    the membrane within 24 bits: a slowly decaying neuron (dt/tau < 1/2) driven by its peak
    current for T steps reaches ``peak * sum_t (1 - dt/tau)^t``, more than twice the peak."""
    s = stage.synapse
    w = torch.from_numpy(s.weight)
    x = Drive.of(x, s.in_shape).flat(x)  # every value the stem receives
    cur = (
        F.conv2d(x.double(), w, None, stride=s.stride, padding=s.padding, groups=s.groups)
        if s.kind == "conv"
        else F.linear(x.double().flatten(1), w)
    )
    peak = float(cur.abs().max()) or 1.0
    decay = stage.neuron.decay if stage.neuron is not None else 1.0
    build_up = float(sum((1.0 - decay) ** t for t in range(T)))
    scale = A_MAX / (max(STEM_HEADROOM, build_up) * peak)
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
        cap = BIAS_MAX / bmax / (w_range(s.kind) / wmax)
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
        alpha = c * w_range(s.kind) / wmax  # weight scale: w_int = round(w * alpha)
        # the stem's input is graded: S = s_in * alpha, with S fixed by the input range
        scale = stem_scale if stem_scale is not None else alpha
        in_scale = scale / alpha if stem_scale is not None else None
        w_int, clipped = quantise_weight(s.weight, alpha, s.kind)
        bias = np.rint(s.bias * scale).astype(np.int64)
        if np.abs(bias).max(initial=0) > BIAS_MAX:
            continue
        dv = int(round(stage.neuron.decay * DECAY_UNITY)) if stage.neuron else 0
        q = QStage(stage, weight=w_int, bias=bias, scale=scale, dv=dv)
        if stem_scale is not None:
            a = run_stage(q, round_input(inp, in_scale)[0], True, T)
        else:
            a = run_stage(q, inp, False, T)
        if stage.neuron is None:
            total = a.sum(0) + T * torch.from_numpy(bias.astype(np.float64))
            if int((total.abs() > A_MAX).sum()):
                continue
            logits = ((a + torch.from_numpy(bias.astype(np.float64))) / scale).mean(0)
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


def require_no_current_decay(plan: Plan) -> None:
    """nalln's Loihi arithmetic (emulator, calibration, netx) runs ``du = 4095`` (no current
    memory) and reads a readout's current: a CubaLIF's synaptic decay and an LI/Integrator
    readout are not modelled there yet; refuse them by name."""
    for st in plan.stages:
        if st.recurrent is not None:
            raise NallnError(
                f"{st.neuron.nir_type} node {st.name!r} is recurrent (through "
                f"{st.recurrent.source!r}); nalln's Loihi fixed point has no recurrent synapse "
                "yet: run it in float (--backend norse)"
            )
        if st.readout is not None:
            raise NallnError(
                f"{st.readout.nir_type} node {st.readout.name!r} is a non-spiking readout; "
                "nalln's Loihi fixed point has no readout membrane yet: run it in float "
                "(--backend norse)"
            )
    for n in plan.neurons:
        if n.current_decay != 1.0:
            raise NallnError(
                f"{n.nir_type} node {n.name!r} has a synaptic current decay (dt/tau_syn = "
                f"{n.current_decay:.3g}); nalln's Loihi fixed point models none yet: run it in "
                "float (--backend norse, or lava without --fixed-point)"
            )


@torch.no_grad()
def calibrate(plan: Plan, x: torch.Tensor, progress: bool = False) -> QuantPlan:
    """Quantise ``plan`` for Loihi, calibrating every layer on normalised images ``x``."""
    require_no_current_decay(plan)
    T = plan.num_steps
    ref = run_plan(plan, x, dtype=torch.float32)  # the torch model's precision
    ref_logits = ref.outputs.mean(0).double()
    stem_scale = _stem_scale(plan.stages[0], x, T)
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
