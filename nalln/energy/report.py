"""``nalln energy report``: count a trained run on real images, price it on every target.

Data flows one way: run folder + images -> counts (SNN and its ReLU twin) -> estimates per
target and model -> break-even -> JSON / CSV / Markdown / PNG. Everything is computed before the
first file is written, and every file is written atomically, so a failure leaves no half report.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nalln import __version__
from nalln.data.dataset import DatasetIndex, Record, load_images, scan
from nalln.distributed.collect import agree, gather_shards, sequence_shard, world_fits
from nalln.distributed.world import current
from nalln.energy import onchip_gates
from nalln.energy.baseline import relu_twin
from nalln.energy.cost_models import MODELS, availability, estimate, group_of
from nalln.energy.counting import NetworkCounts, count_model, merge_counts
from nalln.energy.pricing import events_per_weight, price
from nalln.energy.validation import validation_note
from nalln.errors import DataError, NallnError
from nalln.hardware_targets.registry import TargetRegistry, load_registry
from nalln.hardware_targets.schema import Target
from nalln.inference import pick_device
from nalln.provenance import notes, provenance_fields
from nalln.runs import LoadedModel, load_model

SCHEMA = 1
DEFAULT_BASELINE = "asic45-int8"
LOWBIT_BASELINE = "asic45-int4"  # a second, derived low-bit baseline for chips when present
DEFAULT_HOST = "asic45-int8"
DAMPFHOFFER_RANGE = (0.15, 1.38)  # synaptic events per synapse per inference for an SNN to win
MEASURED_NOTE = (
    "No measured energy beside the estimate: RAPL was not readable where this was developed "
    "(no /sys/class/powercap) and no GPU was lent to measure with NVML."
)
RULES = {
    "normalisation": (
        "per inference: one image classified, all T time steps summed; the per_step arrays split "
        "each count by time step"
    ),
    "ac_vs_mac": (
        "NeuroBench 2.3: a layer call counts accumulates (AC) when every input value is -1, 0 "
        "or 1, else multiply-accumulates (MAC)"
    ),
    "effective_ops": (
        "number of (nonzero input, nonzero weight) pairs that meet in the layer: stride, "
        "padding, groups and zero weights exact (NeuroBench's Effective_ACs / Effective_MACs)"
    ),
    "dense_ops": "every (input, weight) pair the layer computes, zeros included (NeuroBench Dense)",
    "batchnorm": (
        "folded into the preceding conv / linear for inference: no operation; its shift becomes "
        "a per-neuron bias (one bias read and add per neuron per step in ops+memory)"
    ),
    "bias": "not a synaptic operation (as NeuroBench); charged in ops+memory only",
    "stem": (
        "direct coding: the stem conv + BatchNorm runs once per image and its current is fed "
        "at every step, so its MACs are counted once (a step-by-step implementation, and "
        "NeuroBench on one, counts them T times)"
    ),
    "se_block": (
        "the SE block's fc1 / fc2 are MACs (analog input); its global pooling (one add per "
        "element) and gate (one multiply per element of the current, before the LIF) are "
        "counted separately (NeuroBench does not count them)"
    ),
    "se_onchip": (
        "a run fine-tuned with --se onchip computes its SE gates on neuro-cores (no host "
        "part): spikes into C_in count compartments are binary events; the copy of the "
        "pointwise weights into C accumulators, fc1, fc2, the broadcast of each gate to its "
        "positions and product -> LIF are graded events (one per nonzero 24-bit message and "
        "nonzero weight), counted from the gate's integer values on these images; every gate "
        "neuron updates at every step; the ANN twin computes the same SE blocks in float"
    ),
    "head": (
        "GAP -> fc1 -> BN1d -> LIF -> fc2: the pooled spike counts are analog, so fc1 counts "
        "MACs (NeuroBench rule); fc2 receives spikes and counts ACs; the pooling is counted as "
        "adds"
    ),
    "membrane_updates": (
        "every neuron at every step (clock-driven update: leak, bias, threshold); NeuroBench's "
        "MembraneUpdates counts only potentials that changed"
    ),
    "baseline": (
        "the same architecture with ReLU instead of LIF and T = 1, counted by the same code; "
        "'ann' = dense MACs (a conventional accelerator), 'ann-zero-skip' = effective MACs (an "
        "accelerator that skips zero activations; sparsity of this untrained twin, indicative); "
        "under ops+memory from a reuse-aware dataflow (each weight / input read once per layer "
        "when the global buffer holds them) to no reuse (Lemaire: a read per MAC)"
    ),
    "matched": (
        "every verdict prices both sides under one cost model: arithmetic only, memory on "
        "both sides (a chip's per-event figure includes its memory, so a chip meets only an ANN "
        "that pays memory), or dense at one precision; ranges run from the cheap to the dear "
        "end of each side's modelling"
    ),
    "break_even": (
        "scale every spike count of the SNN by s (analog-layer counts fixed) and solve "
        "E_fixed + s * E_activity = E_baseline; the break-even firing rate is s times the "
        "measured mean rate (spikes per neuron per step over all LIF layers); pessimistic = "
        "SNN high end vs ANN low end, optimistic = the reverse"
    ),
    "sparsity": (
        "two conventions: spikes per neuron per step (firing_rate) and synaptic events per "
        "nonzero weight per inference on the spike-input layers (Dampfhoffer et al. 2023, who "
        "find an SNN wins against an efficient ANN only at about 0.15-1.38); Yan et al. 2024 "
        "(arXiv:2409.08290) put the threshold against a low-bit ANN at a spike rate below "
        "about 5.7% for T = 5 once data movement is counted"
    ),
}


@dataclass(frozen=True)
class ReportOptions:
    """What to count and how to price it."""

    targets: tuple[str, ...] = ()  # empty = every known target
    models: tuple[str, ...] = ()  # empty = every model each target supports
    n: int = 100
    split: str = "test"  # train | val | test | all
    baseline: str = DEFAULT_BASELINE
    host: str = DEFAULT_HOST
    targets_dirs: tuple[str, ...] = ()
    checkpoint: str = "best"
    batch_size: int = 16
    device: str = "cpu"
    layout: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise NallnError("--n must be at least 1 image")
        if self.batch_size < 1:
            raise NallnError("--batch-size must be at least 1")
        if self.split not in ("train", "val", "test", "all"):
            raise NallnError(f"unknown split {self.split!r}; use train, val, test or all")
        bad = [m for m in self.models if m not in MODELS]
        if bad:
            raise NallnError(f"unknown energy model(s) {bad}; known models: {', '.join(MODELS)}")


@dataclass
class Plan:
    """Which (target, model) estimates to compute, checked before any counting."""

    registry: TargetRegistry
    targets: list[Target]
    models: dict[str, list[str]]  # target id -> models to compute
    unavailable: dict[str, dict[str, str]]  # target id -> model -> reason
    baseline: Target
    host: Target
    baselines: list[Target] = field(default_factory=list)  # ASICs a chip is compared with


def make_plan(opts: ReportOptions) -> Plan:
    registry = load_registry(opts.targets_dirs)
    targets = registry.resolve(list(opts.targets) or registry.ids)
    baseline = registry.get(opts.baseline)
    host = registry.get(opts.host)
    if host.kind != "asic":
        raise NallnError(f"--host must be an ASIC target (e.g. asic45-int8), not {host.kind}")
    if baseline.kind != "asic":
        raise NallnError(
            f"--baseline must be an ASIC target (e.g. asic45-int8), not {baseline.kind}"
        )
    models: dict[str, list[str]] = {}
    unavailable: dict[str, dict[str, str]] = {}
    for t in targets:
        want = list(opts.models) or list(MODELS)
        models[t.id], unavailable[t.id] = [], {}
        for m in want:
            reason = availability(t, m, registry)
            if reason is None:
                models[t.id].append(m)
            elif "does not apply" not in reason:
                if opts.models:  # explicitly asked for: a clear error
                    raise NallnError(reason)
                unavailable[t.id][m] = reason
        if not models[t.id] and opts.models:
            raise NallnError(
                f"none of the models {', '.join(opts.models)} apply to {t.kind} target {t.id}; "
                f"{t.kind} targets use: "
                + ", ".join(m for m in MODELS if availability(t, m, registry) is None)
            )
    for m in {m for ms in models.values() for m in ms if m != "dense"}:
        reason = availability(host, m, registry)
        if reason and any(t.kind == "neuromorphic" and m in models[t.id] for t in targets):
            raise NallnError(f"host {host.id}: {reason}")
    baselines = [baseline]
    if LOWBIT_BASELINE in registry.targets and baseline.id != LOWBIT_BASELINE:
        baselines.append(registry.get(LOWBIT_BASELINE))
    return Plan(registry, targets, models, unavailable, baseline, host, baselines)


def select_images(
    loaded: LoadedModel, data: str | Path | None, opts: ReportOptions
) -> tuple[DatasetIndex, list[Record], str]:
    """The records to count: a split of the run's manifest, or every image of ``data``."""
    src = loaded.run_meta.data
    root = src.require_root(data)
    layout = src.layout if opts.layout == "auto" else opts.layout
    if opts.split == "all":
        index = scan(root, layout, src.variant)
        records, subset = list(index.records), "all images"
    else:
        from nalln.evaluation.evaluate import select_records

        if loaded.run is None or not loaded.run.splits.is_file():
            raise NallnError(
                f"--split {opts.split} needs the run folder (it holds splits.csv); pass RUN "
                "instead of a checkpoint file, or use --split all to count images of --data"
            )
        index, records, subset = select_records(loaded, root, opts.split, None, layout)
    if not records:
        raise DataError(f"no images to count in {index.root} ({subset}); the data set is empty")
    if len(records) > opts.n:
        rng = random.Random(opts.seed)
        records = sorted(rng.sample(records, opts.n), key=lambda r: r.path)
    return index, records, subset


# -- assembling ----------------------------------------------------------------------------


def _steps_list(a: np.ndarray, n: int) -> list[float]:
    return [float(v) / max(1, n) for v in a]


def count_sections(
    snn: NetworkCounts, ann: NetworkCounts, layers: list, mem: dict, plan: Plan
) -> dict[str, Any]:
    """The counted part of a report (``snn``, ``ann``, ``options``), the same for a run and a
    NIR graph."""
    return {
        "snn": {
            "totals": snn.totals,
            "sparsity": sparsity(snn),
            "layers": layers,
            "populations": population_rows(snn),
            "extra_ops": extra_rows(snn),
            "memory_accesses": mem,
            "onchip_se": [G.summary(snn.n) for G in snn.gates],
            "onchip_se_totals": onchip_gates.totals(snn) if snn.gates else None,
        },
        "ann": ann_section(ann),
        "options": options_of(plan),
    }


def population_rows(snn: NetworkCounts) -> list[dict[str, Any]]:
    """Per population, per inference: neurons, spikes, firing rate (the report's ``snn``)."""
    return [
        {
            "name": P.name,
            "fed_by": P.source,
            "neurons": P.neurons,
            "spikes": snn.per_inference(float(P.spikes.sum())),
            "firing_rate": snn.per_inference(float(P.spikes.sum())) / (P.neurons * P.num_steps),
            "membrane_updates": P.neurons * P.num_steps,
            "per_step_spikes": _steps_list(P.spikes, snn.n),
        }
        for P in snn.populations
    ]


def extra_rows(snn: NetworkCounts) -> list[dict[str, Any]]:
    return [
        {
            "name": E.name,
            "kind": E.kind,
            "adds": snn.per_inference(E.adds),
            "muls": snn.per_inference(E.muls),
        }
        for E in snn.extras
    ]


def ann_section(ann: NetworkCounts) -> dict[str, Any]:
    return {
        "totals": ann.totals,
        "layers": [
            {
                "name": L.name,
                "dense_macs": ann.per_inference(float(L.dense.sum())),
                "effective_macs": ann.per_inference(float(L.ac.sum() + L.mac.sum())),
            }
            for L in ann.layers
        ],
    }


def options_of(plan: Plan) -> dict[str, Any]:
    return {
        "baseline": plan.baseline.id,
        "host": plan.host.id,
        "targets": [t.id for t in plan.targets],
        "models": plan.models,
    }


def layer_rows(snn: NetworkCounts, ann: NetworkCounts) -> list[dict[str, Any]]:
    """Per synaptic layer of the SNN, with its population and the ANN twin's counts."""
    rows = []
    pi = snn.per_inference
    for L in snn.layers:
        P = snn.population(L.population)
        A = next((a for a in ann.layers if a.name == L.name), None)
        row: dict[str, Any] = {
            "name": L.name,
            "group": group_of(L.name),
            "kind": L.kind,
            "role": L.role,
            "input": "spikes" if L.spike_input else "analog",
            "counted_as": "AC" if L.binary else "MAC",
            "computed": "once per inference" if L.once else f"every step (T={L.num_steps})",
            "in_shape": list(L.in_shape),
            "out_shape": list(L.out_shape),
            "weights": L.weights,
            "nonzero_weights": L.nonzero_weights,
            "kernel": list(L.kernel),
            "stride": list(L.stride),
            "groups": L.groups,
            "input_nonzero": pi(float(L.in_nonzero.sum())),
            "input_rate": pi(float(L.in_nonzero.sum())) / (L.in_elements * L.steps_run),
            "synaptic_acs": pi(float(L.ac.sum())),
            "synaptic_macs": pi(float(L.mac.sum())),
            "dense_ops": pi(float(L.dense.sum())),
            "ann_dense_macs": ann.per_inference(float(A.dense.sum())) if A else None,
            "ann_effective_macs": (
                ann.per_inference(float(A.ac.sum() + A.mac.sum())) if A else None
            ),
            "population": L.population,
            "per_step": {
                "input_nonzero": _steps_list(L.in_nonzero, snn.n),
                "synaptic_acs": _steps_list(L.ac, snn.n),
                "synaptic_macs": _steps_list(L.mac, snn.n),
                "dense_ops": _steps_list(L.dense, snn.n),
            },
        }
        if P is not None:
            spikes = pi(float(P.spikes.sum()))
            row.update(
                neurons=P.neurons,
                output_spikes=spikes,
                firing_rate=spikes / (P.neurons * P.num_steps),
                membrane_updates=P.neurons * P.num_steps,
            )
            row["per_step"]["output_spikes"] = _steps_list(P.spikes, snn.n)
        rows.append(row)
    return rows


def memory_access_counts(snn: NetworkCounts, registry: TargetRegistry) -> dict[str, dict]:
    """Lemaire et al. memory accesses per layer group (target-independent counts)."""
    ref = registry.targets.get("asic45-fp32") or next(
        (
            t
            for t in registry.targets.values()
            if availability(t, "ops+memory", registry) is None and t.kind == "asic"
        ),
        None,
    )
    if ref is None:
        return {}
    est = estimate(snn, ref, "ops+memory", registry)
    out: dict[str, dict[str, float]] = {}
    for t in est.terms:
        if t.what.startswith("memory:"):
            d = out.setdefault(t.group, {})
            key = t.what.removeprefix("memory: ").replace(" ", "_")
            d[key] = d.get(key, 0.0) + t.count
    return out


def caveats(
    snn: NetworkCounts, ann: NetworkCounts, plan: Plan, synthetic: bool, synthetic_model: bool
) -> list[str]:
    T = snn.num_steps
    stem = [L for L in snn.layers if L.once]
    head_fc1 = next((L for L in snn.layers if L.role == "head" and not L.spike_input), None)
    out = []
    out.extend(notes(synthetic, synthetic_model))
    out.append(
        "Estimates, not measurements: operation counts are counted on these images; energies are "
        "those counts times cited per-operation constants (see each target's constants)."
    )
    if stem:
        macs = sum(snn.per_inference(float(L.mac.sum() + L.ac.sum())) for L in stem)
        out.append(
            f"The direct-coded stem is computed once per image ({macs:,.0f} MACs per inference); "
            f"an implementation that recomputes it at every step does {T}x that "
            f"({T * macs:,.0f}), which is what NeuroBench counts on a step-by-step model."
        )
    if snn.gates:
        out.append(
            "On-chip SE: the gates run on neuro-cores (count, sum, fc1, fc2, product neurons, "
            "Loihi 2 synaptic delays), no host part; the stem and the head's fc1 take analog "
            f"input and are charged to the host ({plan.host.id}) with their host-chip traffic "
            "(host I/O terms, a DRAM-access proxy for the link). "
            + onchip_gates.GRADED_NOTE
            + ". "
            + onchip_gates.ASSUMPTIONS
            + "."
        )
    else:
        out.append(
            "The stem, the SE blocks and the head's fc1 take analog input: no chip in the list "
            "runs them on binary spikes, so on neuromorphic targets they are charged to the host "
            f"({plan.host.id}); the SE gate multiplies two signals, which no neuromorphic chip "
            "here can do: a deployable version folds the gates. The host-chip traffic this "
            "forces (stem current in, SE current out and back, pooled spikes out, fc1 current "
            "in) is charged per bit (host I/O terms, a DRAM-access proxy for the link: no link "
            "figure found)."
        )
    if head_fc1 is not None:
        out.append(
            "GAP -> fc1: pooled spike counts are analog, so fc1 counts MACs (NeuroBench) unless "
            "the pooled map is 1x1 (then its input stays binary: counted and priced as ACs). "
            "Folding the pooling into fc1's weights would make them ACs on spikes."
        )
    out.append(
        "ops+memory on an ASIC: each side from a reuse-aware dataflow (each weight and input "
        "read from SRAM once per layer when the global buffer holds them; register files not "
        "charged: a lower bound) to Lemaire et al. 2022's no-reuse model (a read per MAC: an "
        "upper bound). No DRAM, no leakage or clock on the ASIC."
    )
    out.append(
        "Neuromorphic chips: per-event figures (Loihi's pre-silicon minimums, Davies et al. "
        "2018) plus static power x latency, spike routing over the placement of "
        "`nalln hardware fit`, and host I/O, each at a low and a high bound; a chip's figure "
        "includes its memory, so it is compared only under ops+memory. "
        + validation_note(plan.registry)
    )
    if any(t.energy_proxy for t in plan.targets):
        out.append(
            "Loihi 2: Intel has published no per-operation energy; its figures here are Loihi "
            "(14 nm) figures used as a labelled PROXY."
        )
    out.append(
        "GPU/CPU figures are TDP / peak throughput at full utilisation without memory traffic "
        "or idle power: optimistic lower bounds, compared at the same precision on both sides "
        "(FP32, FP16, INT8). Dense execution gains nothing from sparse spikes: every layer "
        f"after the once-computed stem costs T={T} times its ANN MACs there. " + MEASURED_NOTE
    )
    out.append(
        "The ANN baseline is the same architecture with the SNN's weights under ReLU, not a "
        "trained ANN: its dense MAC counts are exact, its zero-skip sparsity is indicative."
    )
    out.append(
        "The break-even firing rate scales every spike count uniformly; the real trade-off "
        "also moves accuracy, which this report does not model."
    )
    out.append(
        "Not counted: the mean of the logits over T, the SE block's ReLU and sigmoid on its "
        "pooled vector (negligible next to the rest)."
    )
    return out


@dataclass
class EnergyReport:
    data: dict[str, Any]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    snn: NetworkCounts | None = None
    ann: NetworkCounts | None = None

    @property
    def tables(self) -> dict[str, Any]:
        """The report's tables as pandas DataFrames (``energy_layers``, ``energy_targets``,
        ``energy_summary``, ...), the same that the CSV files hold."""
        from nalln.energy.tables import frames

        return frames(self.data)


def build_report(
    run: str | Path,
    data: str | Path | None,
    opts: ReportOptions,
    progress: bool = False,
) -> EnergyReport:
    """Count and price; returns the report data (nothing written yet)."""
    t0 = time.perf_counter()
    plan = make_plan(opts)  # bad targets / models fail before anything heavy
    world = current()
    progress = progress and world.main
    dev = world.device(pick_device(opts.device))
    loaded = agree(lambda: load_model(run, opts.checkpoint, dev), world)
    index, records, subset = agree(lambda: select_images(loaded, data, opts), world)
    world_fits(len(records), world, "images to count")
    # under torchrun each rank counts a contiguous share; counts are sums, so they add up
    mine = sequence_shard(records, world)
    images = agree(
        lambda: load_images(index, mine, loaded.image_size, progress, "loading images"), world
    )
    t1 = time.perf_counter()
    snn = count_model(
        loaded.model,
        images,
        preprocess=loaded.preprocess,
        batch_size=opts.batch_size,
        device=dev,
        network="snn",
        progress=progress,
        desc="counting SNN",
    )
    t2 = time.perf_counter()
    ann = count_model(
        relu_twin(loaded.model),
        images,
        preprocess=loaded.preprocess,
        batch_size=opts.batch_size,
        device=dev,
        network="ann",
        progress=progress,
        desc="counting ANN twin",
    )
    if world.distributed:
        snn, ann = (merge_counts(gather_shards([c], world)) for c in (snn, ann))
    t3 = time.perf_counter()
    if snn.n == 0:
        raise DataError("no images were counted; the data set is empty")
    # two facts (issue 15, finding 3): the images counted, and the data the model learnt from
    synthetic, synthetic_model = bool(index.synthetic), bool(loaded.synthetic)
    targets, summary = price(snn, ann, plan)
    mem = memory_access_counts(snn, plan.registry)
    layers = layer_rows(snn, ann)
    for row in layers:
        row["memory_accesses"] = mem.get(row["group"], {}) if row["group"] == row["name"] else {}
    cfg = dict(loaded.run_meta.model_config)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        **provenance_fields(synthetic, synthetic_model),
        "source": {
            "checkpoint": str(loaded.checkpoint.path),
            "model": loaded.run_meta.model_name,
            "image_size": loaded.image_size,
            "num_steps": snn.num_steps,
            "data": str(index.root),
            "subset": subset,
            "n_images": snn.n,
            "images": [r.path for r in records],
            "nalln_version": __version__,
            "model_config": cfg,
        },
        "rules": RULES,
        **count_sections(snn, ann, layers, mem, plan),
        "targets": targets,
        "summary": summary,
        "caveats": caveats(snn, ann, plan, synthetic, synthetic_model),
    }
    t4 = time.perf_counter()
    report["timing_s"] = {
        "load_and_images": t1 - t0,
        "count_snn": t2 - t1,
        "count_ann": t3 - t2,
        "price": t4 - t3,
        "provenance": "measured wall-clock time on this machine",
    }
    return EnergyReport(report, Path(), snn=snn, ann=ann)


def headline(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The verdict rows (every one a matched comparison)."""
    return list(summary)


def sparsity(snn: NetworkCounts) -> dict[str, float | None]:
    """Activity in both conventions: spikes per neuron per step, and synaptic events per
    nonzero weight per inference over the spike-input layers (Dampfhoffer et al. 2023)."""
    return {
        "spikes_per_neuron_per_step": snn.totals["firing_rate"],
        "synaptic_events_per_nonzero_weight": events_per_weight(snn),
        "dampfhoffer_win_range": list(DAMPFHOFFER_RANGE),
    }
