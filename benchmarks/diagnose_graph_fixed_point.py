"""Where does a foreign NIR graph lose spike agreement on Loihi's fixed point? (docs/conversion.md)

Calibrates the graph on CAL.npz's inputs (as ``simulate --backend loihi-emulator`` does) and,
on EVAL.npz's inputs (default: CAL's), measures against the float reference: the whole
fixed-point network (bit-exact emulator), each layer's quantisation alone (its float twin:
dequantised weights, bias, threshold and decay, the rest float), the stem's parts alone (weights,
input grid, bias, threshold, decay) and how near the threshold the float membrane was where the
emulator's first layer first disagrees (a near-tie) - for a plain LIF/IF stem.

    python benchmarks/diagnose_graph_fixed_point.py GRAPH.nir CAL.npz [--eval EVAL.npz]
        [--steps T] [--range graph|run]

``--range run`` calibrates with the stem range nalln's own runs use (``RUN_RANGE``, the recipe
before 2026-12-02 for every graph). Prints tables; nothing is written.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import nir
import numpy as np
import torch

from nalln.conversion.nir_io import Artefact
from nalln.conversion.plan import lower
from nalln.ir.drive import Drive
from nalln.ir.plan import Plan
from nalln.ir.reference import apply_synapse, run_plan
from nalln.loihi.arithmetic import DECAY_UNITY, round_input
from nalln.loihi.calibration import GRAPH_RANGE, RUN_RANGE, calibrate
from nalln.loihi.emulator import emulate
from nalln.loihi.quant_plan import QuantPlan
from nalln.textfmt import format_table

PARTS = ("weights", "input grid", "bias", "threshold", "decay")


def twin(plan: Plan, qp: QuantPlan, k: int, parts: tuple[str, ...] = PARTS) -> Plan:
    """``plan`` with layer ``k``'s ``parts`` replaced by their fixed-point values in float."""
    st, q = plan.stages[k], qp.stages[k]
    alpha = q.scale / qp.input_scale if k == 0 else q.scale  # w_int = round(w alpha)
    syn = st.synapse
    if "weights" in parts:
        syn = replace(syn, weight=q.weight / alpha)
    if "bias" in parts:
        bias = q.bias / q.scale
        if q.drives and q.drives[0].from_step == 0:  # a CubaLIF's bias rides in the current
            bias = q.drives[0].values / q.scale
        syn = replace(syn, bias=bias)
    n = st.neuron
    if n is not None and "threshold" in parts:
        n = replace(n, v_th=q.vth / q.scale)
    if n is not None and "decay" in parts:
        n = replace(n, decay=q.dv / DECAY_UNITY)
    rec = st.recurrent
    if rec is not None and "weights" in parts:
        rec = replace(rec, weight=q.recurrent / q.scale)
    stages = list(plan.stages)
    stages[k] = replace(st, synapse=syn, neuron=n, recurrent=rec)
    return replace(plan, stages=stages)


def agreements(got: dict, want: dict) -> tuple[float, dict[str, float]]:
    """Entry-weighted overall agreement (as ``simulate`` reports it) and per layer."""
    per = {k: float((got[k] == want[k]).double().mean()) for k in want}
    n = {k: want[k].numel() for k in want}
    return sum(per[k] * n[k] for k in per) / sum(n.values()), per


def near_ties(plan: Plan, qp: QuantPlan, x: torch.Tensor, got: torch.Tensor, want: torch.Tensor):
    """Float membrane margin ``|v - v_th|`` where the stem's fixed-point spikes first differ
    (per neuron and input), and the fraction of all decisions that close; None where the stem
    is not a plain LIF/IF on a held input."""
    st = plan.stages[0]
    n = st.neuron
    held = Drive.of(x, st.synapse.in_shape) is Drive.HELD
    if n is None or st.recurrent is not None or n.current_decay != 1.0 or not held:
        return None
    cur = apply_synapse(st.synapse, x.double())
    v, margins = torch.zeros_like(cur), []
    for _ in range(plan.num_steps):
        v = (1 - n.decay) * v + cur
        margins.append((v - n.v_th).abs())
        v = torch.where(v > n.v_th, torch.zeros_like(v), v)
    margin = torch.stack(margins)
    diff = got != want
    first = diff & (diff.cumsum(0) == 1)
    if not first.any():
        return {"neurons_flipped": 0}
    at = margin[first]
    return {
        "entries_flipped": int(diff.sum()),
        "entries": diff.numel(),
        "neurons_flipped": int(first.sum()),
        "margin_at_first_flip_median": float(at.median()),
        "margin_at_first_flip_max": float(at.max()),
        "decisions_within_that_margin": float((margin <= at.max()).double().mean()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("graph")
    ap.add_argument("cal")
    ap.add_argument("--eval", dest="eval_npz")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--range", choices=("graph", "run"), default="graph")
    args = ap.parse_args()
    with np.load(args.cal) as f:
        x_cal = torch.from_numpy(f["x"])
        steps = args.steps or int(f["steps"])
    x = x_cal
    if args.eval_npz:
        with np.load(args.eval_npz) as f:
            x = torch.from_numpy(f["x"])
    plan = lower(Artefact([nir.read(args.graph)], [], {}), steps)
    room = GRAPH_RANGE if args.range == "graph" else RUN_RANGE
    qp = calibrate(plan, x_cal, stem_range=room)
    print(f"calibrated on {len(x_cal)} inputs ({args.range} range), evaluated on {len(x)}")
    keys = ("clip_factor", "threshold_tweak", "weights_clipped")
    rows = [
        [r["layer"], r["kind"], f"{r['scale']:.1f}", r["vth"], r["max_abs_weight"]]
        + [r.get(k, "") for k in keys]
        for r in qp.table()
    ]
    head = ["layer", "kind", "S", "vth", "max |w_int|", "clip c", "tweak d", "clipped"]
    print(f"input scale s_in = {qp.input_scale:.2f}")
    print(format_table(rows, head, "llrrrrrr"))
    ref = run_plan(plan, x).spikes
    em = emulate(qp, x)
    overall, per = agreements(em.trace.spikes, ref)
    rows = [["whole network (emulator)", f"{overall:.4f}", *(f"{per[k]:.4f}" for k in ref)]]
    for k in range(len(plan.stages)):
        xi = round_input(x, qp.input_scale)[0] / qp.input_scale if k == 0 else x
        o, p = agreements(run_plan(twin(plan, qp, k), xi).spikes, ref)
        rows.append([f"only layer {plan.stages[k].name} (float twin)", f"{o:.4f}"])
        rows[-1] += [f"{p[j]:.4f}" for j in ref]
    for part in PARTS:
        xi = round_input(x, qp.input_scale)[0] / qp.input_scale if part == "input grid" else x
        o, p = agreements(run_plan(twin(plan, qp, 0, (part,)), xi).spikes, ref)
        rows.append([f"only the stem's {part}", f"{o:.4f}", *(f"{p[j]:.4f}" for j in ref)])
    print(format_table(rows, ["quantised", "overall", *ref], "l" + "r" * (len(ref) + 1)))
    first = plan.stages[0].name
    ties = near_ties(plan, qp, x, em.trace.spikes[first], ref[first])
    if ties is not None:
        print(format_table([[k, v] for k, v in ties.items()], ["stem flips", "value"], "lr"))
    if em.overflowed:
        print(f"overflows: {em.overflowed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
