"""``nalln energy report GRAPH.nir --inputs X.npz``: a NIR graph another tool wrote, counted on its
deployment plan (:mod:`nalln.energy.plan_counting`) and priced by the same cost models, verdicts
and tables as a run's report. Everything is computed before anything is written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from nalln import __version__
from nalln.conversion.export import FORMAT as NALLN_FORMAT
from nalln.conversion.inputs import load_inputs, steps_for
from nalln.conversion.nir_io import Artefact, read_artefact
from nalln.conversion.plan import lower
from nalln.energy.counting import NetworkCounts
from nalln.energy.plan_counting import count_plan, folded_pools, plan_structure
from nalln.energy.pricing import price
from nalln.energy.report import (
    MEASURED_NOTE,
    RULES,
    SCHEMA,
    EnergyReport,
    ReportOptions,
    count_sections,
    layer_rows,
    make_plan,
    memory_access_counts,
)
from nalln.energy.validation import validation_note
from nalln.errors import NallnError
from nalln.ir.drive import Drive
from nalln.ir.plan import Plan
from nalln.provenance import notes, provenance_fields

COUNTED_BY = "the float64 reference simulation of the graph's deployment plan"
GRAPH_RULES = {
    **{k: RULES[k] for k in ("ac_vs_mac", "effective_ops", "dense_ops", "bias")},
    "normalisation": (
        "per inference: one input (one row of x in --inputs), all T time steps summed; the "
        "per_step arrays split each count by time step"
    ),
    "source_of_counts": (
        "the graph is lowered to nalln's deployment plan (conversion.plan.lower) and simulated "
        "by the float64 reference (ir.reference.run_plan, the reference `nalln simulate` "
        "compares every back-end with); each synapse is counted on its real input at each "
        "step: the graph's input for the first, the spikes of the population before it after"
    ),
    "input_layer": (
        "held inputs (x [N, ...]: the same value at every step) give the first synapse the "
        "same current at every step: computed and counted once per inference; per-step inputs "
        "(x [N, T, ...]) are counted at every step. AC or MAC by the data rule; placed on the "
        "host of a neuromorphic chip (its input is not a population's spikes)"
    ),
    "folded_pooling": (
        "a pooling node that lowering folded into the next synapse (weights repeated over the "
        "window, divided by its area for AvgPool) is counted as the folded layer: it reads "
        "the un-pooled spikes, so each spike reaches every output its window fed (the folded "
        "layer's fan-out, its repeated weights), counted as ACs; no pooling adds"
    ),
    "recurrent": (
        "a recurrent synapse (neuron -> w -> the same neuron) reads the population's spikes of "
        "the previous step: counted at steps 1..T-1 (NIR's one-step delay: nothing arrives at "
        "step 0), as ACs on spikes; the population's own updates are charged once"
    ),
    "se_block": (
        "an SE side-car gate (hybrid export): fc1 / fc2 are MACs on the pooled current, the "
        "pooling (one add per element) and the gate (one multiply per element) extra "
        "operations, on the host of a chip"
    ),
    "readout": (
        "a last synapse with no spiking neuron after it (a current or an LI / Integrator "
        "readout) is a readout layer: counted like any synapse, no population"
    ),
    **{k: RULES[k] for k in ("membrane_updates",)},
    "baseline": (
        "the same synapses with ReLU instead of every neuron and T = 1, counted by the same "
        "code (held inputs as they are; per-step inputs as their mean over the steps: one "
        "frame); recurrent synapses are not in it (at T = 1 their input never arrives). "
        "'ann' = dense MACs, 'ann-zero-skip' = effective MACs (this untrained twin's "
        "sparsity: indicative); under ops+memory from a reuse-aware dataflow to no reuse"
    ),
    **{k: RULES[k] for k in ("matched", "break_even", "sparsity")},
}


def _accuracy(outputs: torch.Tensor, y: torch.Tensor | None) -> dict[str, Any]:
    if y is None:
        return {"value": None, "note": "not measured: X.npz has no y"}
    pred = outputs.float().mean(0).argmax(1)
    return {
        "value": float((pred == y).double().mean()),
        "n": int(len(y)),
        "note": (
            "measured on the float64 reference against y of --inputs (argmax of the output "
            "averaged over the steps, as `nalln simulate` decodes it)"
        ),
    }


def graph_caveats(
    snn: NetworkCounts,
    plan: Plan,
    folded: dict[str, str],
    binary_input: bool,
    host: str,
    registry,
    synthetic_model: bool,
    proxy: bool,
) -> list[str]:
    """What a reader of a foreign graph's report must know."""
    T = snn.num_steps
    out = list(notes(False, synthetic_model))
    out.append(
        f"Counted on {COUNTED_BY} (not on a chip or another simulator): the spikes are the "
        "reference's. Energies are those counts times cited per-operation constants: "
        "estimates, not measurements."
    )
    first = snn.layers[0]
    if first.once:
        macs = snn.per_inference(float(first.mac.sum() + first.ac.sum()))
        out.append(
            f"The inputs are held at every step, so the first layer ({first.name}) is computed "
            f"once per input ({macs:,.0f} operations per inference); an implementation that "
            f"recomputes it at every step does {T}x that ({T * macs:,.0f})."
        )
    else:
        out.append(
            f"The inputs have a value per step: the first layer ({first.name}) is counted at "
            "every step."
        )
    if binary_input:
        out.append(
            "Every input value is 0 or 1 (events): the first layer counts ACs, and a chip "
            "could take the inputs as spikes and run it; this report places it on the host, "
            "as for an analog input (the conservative choice for the SNN)."
        )
    for syn, pool in folded.items():
        L = next((x for x in snn.layers if x.name == syn), None)
        if L is None:
            continue
        calls = max(1, snn.n * L.steps_run)
        fan = float(L.dense.sum()) / calls / max(1, L.in_elements)
        out.append(
            f"Pooling {pool!r} was folded into {syn!r} by lowering (weights repeated over the "
            f"window): {syn} is counted as the folded layer ({L.weights:,} weights; each of "
            f"its {L.in_elements:,} un-pooled inputs reaches {fan:.3g} outputs on average), "
            "reading the spikes as ACs; a pooled implementation would instead do pooling adds "
            "and fewer operations on graded (MAC) pooled values."
        )
    for L in snn.layers:
        if L.role == "recurrent":
            out.append(
                f"Recurrent synapse {L.name} (into {L.population}) is counted at steps 1..{T - 1} "
                "from the previous step's spikes (nothing arrives at step 0) and is not in the "
                "ANN twin."
            )
    if any(s.gate is not None for s in plan.stages):
        out.append(
            f"The SE side-car gates multiply two signals: no chip here can, so they run on the "
            f"host ({host}) with their pooling, fc1 and fc2; the current goes out and back."
        )
    out.append(
        "The ANN baseline is these synapses under ReLU at T = 1, not a trained ANN: its dense "
        "MAC counts are exact, its zero-skip sparsity is indicative."
    )
    out.append(
        "Neuromorphic chips: per-event figures plus static power x latency, spike routing over "
        "the placement of `nalln hardware fit` and host I/O, each at a low and a high bound. "
        + validation_note(registry)
    )
    if proxy:
        out.append(
            "Loihi 2: Intel has published no per-operation energy; its figures here are Loihi "
            "(14 nm) figures used as a labelled PROXY."
        )
    out.append(
        "GPU/CPU figures are TDP / peak throughput at full utilisation: optimistic lower "
        "bounds, at the same precision on both sides. " + MEASURED_NOTE
    )
    return out


def _graph_name(art: Artefact, path: Path) -> str:
    return str(art.info.get("model_name") or f"NIR graph {path.name}")


def build_graph_report(
    graph: str | Path,
    inputs: str | Path | None,
    opts: ReportOptions,
    steps: int | None = None,
) -> EnergyReport:
    """Count the graph on ``inputs`` (X.npz) and price it; nothing is written."""
    t0 = time.perf_counter()
    if inputs is None:
        raise NallnError(
            "a NIR graph is counted on example inputs: pass --inputs X.npz (x float32 "
            "[N, ...] held or [N, T, ...] per step; see docs/conversion.md)"
        )
    if steps is not None and steps < 1:
        raise NallnError("--steps must be at least 1")
    plan_t = make_plan(opts)  # bad targets / models fail before anything heavy
    path = Path(graph).expanduser()
    art = read_artefact(path)
    shape = tuple(lower(art, num_steps=1).input_shape)
    given = load_inputs(inputs, shape).first(opts.n)
    plan = lower(art, steps_for(given, steps))
    folded = folded_pools(art)
    t1 = time.perf_counter()
    snn, ann, outputs = count_plan(plan, given.x, opts.batch_size)
    t2 = time.perf_counter()
    synthetic_model = bool(art.info.get("synthetic", False))
    targets, summary = price(snn, ann, plan_t)
    mem = memory_access_counts(snn, plan_t.registry)
    layers = layer_rows(snn, ann)
    for row in layers:
        row["memory_accesses"] = mem.get(row["group"], {}) if row["group"] == row["name"] else {}
        row["folded_pool"] = folded.get(row["name"])
        if row["role"] == "recurrent":
            row["computed"] = f"steps 1..{plan.num_steps - 1} (previous step's spikes)"
    x = given.x
    binary_input = bool(((x == 0) | (x == 1)).all())
    drive_text = "held at every step" if given.drive is Drive.HELD else "a value per step"
    report: dict[str, Any] = {
        "schema": SCHEMA,
        **provenance_fields(False, synthetic_model),
        "source": {
            "kind": "nir-graph",
            "graph": str(path),
            "written_by": (
                f"nalln's exporter ({NALLN_FORMAT})"
                if art.info.get("format") == NALLN_FORMAT
                else "another tool (no nalln metadata)"
            ),
            "model": _graph_name(art, path),
            "input_shape": list(plan.input_shape),
            "image_size": None,
            "num_steps": plan.num_steps,
            "dt": plan.dt,
            "se_mode": str(art.se_mode),
            "data": str(given.path),
            "drive": given.drive.value,
            "subset": f"--inputs X.npz, x {list(x.shape)} ({drive_text})",
            "n_images": snn.n,
            "n_inputs": snn.n,
            "binary_inputs": binary_input,
            "counted_by": COUNTED_BY,
            "accuracy": _accuracy(outputs, given.y),
            "nalln_version": __version__,
        },
        "rules": GRAPH_RULES,
        **count_sections(snn, ann, layers, mem, plan_t),
        "targets": targets,
        "summary": summary,
        "caveats": graph_caveats(
            snn,
            plan,
            folded,
            binary_input,
            plan_t.host.id,
            plan_t.registry,
            synthetic_model,
            any(t.energy_proxy for t in plan_t.targets),
        ),
    }
    t3 = time.perf_counter()
    report["timing_s"] = {
        "load_and_inputs": t1 - t0,
        "count_snn_and_ann": t2 - t1,
        "price": t3 - t2,
        "provenance": "measured wall-clock time on this machine",
    }
    return EnergyReport(report, Path(), snn=snn, ann=ann)


def graph_structure(graph: str | Path, steps: int | None = None) -> tuple[NetworkCounts, str]:
    """(layers and populations of the graph's plan, a label) for ``nalln hardware fit``: the
    fit needs no data and no T (``steps`` is checked when given)."""
    if steps is not None and steps < 1:
        raise NallnError("--steps must be at least 1")
    path = Path(graph).expanduser()
    art = read_artefact(path)
    plan = lower(art, num_steps=steps or int(art.info.get("num_steps") or 1))
    shape = "x".join(str(s) for s in plan.input_shape)
    return plan_structure(plan), f"{_graph_name(art, path)} (NIR graph, input {shape})"
