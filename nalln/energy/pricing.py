"""Price the counts on every planned target and build the matched verdicts.

Per target and cost model this computes the estimates (JSON ``targets.<id>.models.<model>``)
and, only where both sides are priced under the same model, a :class:`Verdict` with ranges:

* ASIC, ``ops``: SNN vs the ANN twin on the same ASIC, arithmetic only on both sides; the ANN
  ranges from zero-skipping (low) to dense (high).
* ASIC, ``ops+memory``: both sides pay memory; each side from reuse-aware (low, dataflow.py)
  to no reuse (high, Lemaire); the ANN also from zero-skip to dense.
* Neuromorphic, ``ops+memory``: the chip's per-event figures (memory included) plus its host
  (reuse / no reuse), static power x latency, routing hops and host I/O (chip_costs.py, low /
  high), against the ANN on each ASIC baseline (INT8, derived 4-bit) paying memory too.
* Neuromorphic, ``ops``: estimate only. A per-event chip figure includes memory, an ANN under
  ``ops`` does not: no verdict.
* GPU / CPU, ``dense``: SNN and ANN at the SAME precision (FP32, FP16, INT8), lower bounds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nalln.energy.chip_costs import chip_costs
from nalln.energy.chip_fit import FitResult, fit_network
from nalln.energy.cost_models import Estimate, availability, break_even, estimate
from nalln.energy.counting import NetworkCounts
from nalln.energy.modes import DENSE_PRECISIONS, Bound, CostModel, Dataflow
from nalln.energy.verdicts import Verdict, matched
from nalln.errors import NallnError
from nalln.hardware_targets.registry import TargetRegistry
from nalln.hardware_targets.schema import Target

if TYPE_CHECKING:
    from nalln.energy.report import Plan

NOT_MATCHED = (
    "no verdict under 'ops': the chip's per-event figure includes its memory traffic (and for "
    "TrueNorth static power), an ANN under 'ops' pays arithmetic only; see the ops+memory verdict"
)
SPARSITY_NOTE = (
    "zero-skip sparsity of the ANN: from the ReLU twin, a copy of the SNN's weights under ReLU, "
    "NOT a trained ANN (no trained twin in the run): indicative"
)
INT8_SNN_NOTE = (
    "SNN at INT8 on dense hardware assumes quantised weights and membrane state (as the "
    "repo's QAT path produces); snnTorch itself runs FP32"
)


def constants_used(t: Target, registry: TargetRegistry) -> dict[str, Any]:
    """The target's own constants, plus (for a proxy) the energy constants it borrows, each
    borrowed one labelled ``proxy_from``. Structural limits of the proxy are not listed."""
    out: dict[str, Any] = {}
    if t.energy_proxy:
        src = registry.energy_source(t)
        for k, c in src.constants.items():
            if k in t.constants or not k.startswith(("e_", "p_", "t_")):
                continue
            out[k] = _constant_dict(c) | {"proxy_from": src.id}
    for k, c in t.constants.items():
        out[k] = _constant_dict(c)
    return out


def _constant_dict(c: Any) -> dict[str, Any]:
    return {
        "value": c.value,
        "unit": c.unit,
        "status": c.status,
        "source": c.source,
        **({"note": c.note} if c.note else {}),
    }


def per_layer_compare(snn: Estimate, base: Estimate) -> list[dict[str, Any]]:
    s, b = snn.by_group(), base.by_group()
    rows = []
    for g in dict.fromkeys([*s, *b]):
        sv, bv = s.get(g, 0.0), b.get(g, 0.0)
        rows.append({"group": g, "snn_pj": sv, "baseline_pj": bv, "snn_wins": bool(sv < bv)})
    return rows


def _fit(snn: NetworkCounts, t: Target) -> FitResult | None:
    try:
        return fit_network(snn, t)
    except NallnError:
        return None


def _ann_pair(
    ann: NetworkCounts, base: Target, model: CostModel, reg: TargetRegistry
) -> tuple[Estimate, Estimate, dict[str, Any]]:
    """(ANN low, ANN high, JSON) on ``base``: zero-skip at the cheap dataflow, dense at the
    dear one."""
    if model is CostModel.OPS:
        low = estimate(ann, base, model, reg, network="ann-zero-skip")
        high = estimate(ann, base, model, reg, network="ann")
        low.notes.append(SPARSITY_NOTE)
        js = {"ann": high.to_dict(), "ann_zero_skip": low.to_dict()}
    else:
        low = estimate(ann, base, model, reg, network="ann-zero-skip", dataflow=Dataflow.REUSE)
        high = estimate(ann, base, model, reg, network="ann", dataflow=Dataflow.NO_REUSE)
        reuse = estimate(ann, base, model, reg, network="ann", dataflow=Dataflow.REUSE)
        skip = estimate(ann, base, model, reg, network="ann-zero-skip")
        for e in (low, skip):
            e.notes.append(SPARSITY_NOTE)
        js = {
            "ann": high.to_dict(),
            "ann_zero_skip": skip.to_dict(),
            "ann_reuse": reuse.to_dict(),
            "ann_zero_skip_reuse": low.to_dict(),
        }
    return low, high, js


def _ann_labels(model: CostModel) -> tuple[str, str]:
    if model is CostModel.OPS:
        return "ANN zero-skip", "ANN dense"
    return "ANN zero-skip, reuse dataflow", "ANN dense, no reuse"


def _legacy(res: dict[str, Any], key: str, s: Estimate, b: Estimate, rate: float) -> None:
    """The single-number break-even of one matched pair (kept for JSON readers)."""
    res[key] = break_even(s, b, rate).to_dict()
    res[f"per_layer_{key}"] = per_layer_compare(s, b)


def events_per_weight(snn: NetworkCounts) -> float | None:
    """Synaptic events per nonzero weight per inference over the spike-input layers."""
    spiking = [L for L in snn.layers if L.spike_input]
    events = sum(snn.per_inference(float(L.ac.sum() + L.mac.sum())) for L in spiking)
    nz = sum(L.nonzero_weights for L in spiking)
    return events / nz if nz else None


def _price_dense(
    snn: NetworkCounts, ann: NetworkCounts, t: Target, reg: TargetRegistry, rate: float
) -> tuple[dict[str, Any], list[Verdict]]:
    res: dict[str, Any] = {"snn": {}, "ann": {}}
    verdicts: list[Verdict] = []
    for p in DENSE_PRECISIONS:
        if p.dense_key not in t.constants:
            continue
        s = estimate(snn, t, CostModel.DENSE, reg, precision=p)
        a = estimate(ann, t, CostModel.DENSE, reg, network="ann", precision=p)
        notes = (INT8_SNN_NOTE,) if p == "int8" else ()
        s.notes.extend(notes)
        res["snn"][str(p)], res["ann"][str(p)] = s.to_dict(), a.to_dict()
        _legacy(res, "break_even" if p == "fp32" else f"break_even_{p}", s, a, rate)
        verdicts.append(
            matched(
                t.id,
                CostModel.DENSE,
                s,
                None,
                a,
                None,
                f"ANN on {t.id} ({p})",
                rate,
                (f"TDP/peak at {p}", "", f"TDP/peak at {p}", ""),
                precision=str(p),
                notes=("lower bounds: TDP / peak throughput, no memory traffic or idle", *notes),
            )
        )
    return res, verdicts


def _price_asic(
    snn: NetworkCounts,
    ann: NetworkCounts,
    t: Target,
    model: CostModel,
    reg: TargetRegistry,
    rate: float,
) -> tuple[dict[str, Any], list[Verdict]]:
    res: dict[str, Any] = {}
    if model is CostModel.OPS:
        s_low = s_high = estimate(snn, t, model, reg)
        res["snn"] = s_low.to_dict()
    else:
        s_low = estimate(snn, t, model, reg, dataflow=Dataflow.REUSE)
        s_high = estimate(snn, t, model, reg, dataflow=Dataflow.NO_REUSE)
        res["snn"], res["snn_reuse"] = s_high.to_dict(), s_low.to_dict()
    a_low, a_high, js = _ann_pair(ann, t, model, reg)
    res |= js
    _legacy(res, "break_even", s_high, a_high, rate)
    al, ah = _ann_labels(model)
    sl, sh = ("ops", "ops") if model is CostModel.OPS else ("reuse dataflow", "no reuse")
    v = matched(
        t.id,
        model,
        s_low,
        s_high,
        a_low,
        a_high,
        f"ANN on {t.id}",
        rate,
        (sl, sh, al, ah),
        notes=(SPARSITY_NOTE,),
        events_per_weight=events_per_weight(snn),
    )
    return res, [v]


def _price_chip(
    snn: NetworkCounts,
    ann: NetworkCounts,
    t: Target,
    model: CostModel,
    plan: Plan,
    rate: float,
) -> tuple[dict[str, Any], list[Verdict]]:
    reg = plan.registry
    if model is CostModel.OPS:
        est = estimate(snn, t, model, reg, host=plan.host)
        return {"snn": est.to_dict(), "comparison": NOT_MATCHED}, []
    energy = reg.energy_source(t)
    fit = _fit(snn, t)
    base_low = estimate(snn, t, model, reg, host=plan.host, dataflow=Dataflow.REUSE)
    base_high = estimate(snn, t, model, reg, host=plan.host, dataflow=Dataflow.NO_REUSE)
    lo = chip_costs(snn, t, energy, plan.host, fit, Bound.LOW)
    hi = chip_costs(snn, t, energy, plan.host, fit, Bound.HIGH)
    s_low = base_low.plus(list(lo.terms), list(lo.notes))
    s_high = base_high.plus(list(hi.terms), list(hi.notes))
    res: dict[str, Any] = {
        "snn": base_high.to_dict(),  # per-event figures + Lemaire host, as before
        "snn_low": s_low.to_dict(),
        "snn_high": s_high.to_dict(),
        "latency_s": lo.latency_s,
        "fit": None if fit is None else {"cores": fit.cores, "chips": fit.chips()},
        "ann_by_baseline": {},
    }
    verdicts: list[Verdict] = []
    labels_snn = (
        "per-event figures + host reuse + static/hops/I-O low",
        "per-event figures + host no reuse + static/hops/I-O high",
    )
    for base in plan.baselines:
        reason = availability(base, model, reg)
        if reason is not None:
            res["ann_by_baseline"][base.id] = {"reason": reason}
            continue
        a_low, a_high, js = _ann_pair(ann, base, model, reg)
        res["ann_by_baseline"][base.id] = js
        if base.id == plan.baseline.id:
            res |= js
            _legacy(res, "break_even", s_high, a_high, rate)
        verdicts.append(
            matched(
                t.id,
                model,
                s_low,
                s_high,
                a_low,
                a_high,
                f"ANN on {base.id}",
                rate,
                (*labels_snn, *_ann_labels(model)),
                proxy=t.energy_proxy,
                notes=tuple(dict.fromkeys([*lo.notes, *hi.notes, SPARSITY_NOTE])),
                events_per_weight=events_per_weight(snn),
            )
        )
    return res, verdicts


def price(
    snn: NetworkCounts, ann: NetworkCounts, plan: Plan
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Estimates per (target, model) and the matched verdicts (rows of the verdict table)."""
    reg = plan.registry
    rate = snn.totals["firing_rate"]
    out: dict[str, Any] = {}
    verdicts: list[Verdict] = []
    for t in plan.targets:
        entry: dict[str, Any] = {
            "name": t.name,
            "kind": t.kind,
            "file": str(t.path),
            "energy_proxy": t.energy_proxy,
            "notes": list(t.notes),
            "constants": constants_used(t, reg),
            "models": {},
        }
        for m, reason in plan.unavailable[t.id].items():
            entry["models"][m] = {"available": False, "reason": reason}
        for m in plan.models[t.id]:
            model = CostModel(m)
            if model is CostModel.DENSE:
                res, vs = _price_dense(snn, ann, t, reg, rate)
            elif t.kind == "asic":
                res, vs = _price_asic(snn, ann, t, model, reg, rate)
            else:
                res, vs = _price_chip(snn, ann, t, model, plan, rate)
            entry["models"][m] = {"available": True, "title": model.title, **res}
            verdicts += vs
        out[t.id] = entry
    return out, [v.to_dict() for v in verdicts]
