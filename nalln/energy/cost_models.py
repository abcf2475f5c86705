r"""Energy models: counts x cited per-operation constants, term by term.

Three models, each a list of :class:`Term` (count per inference x energy per event):

``ops`` (what most SNN papers report)
    ASIC: :math:`E = N_{AC} E_{add} + N_{MAC} E_{MAC}` (+ pooling adds, SE gate multiplies).
    Neuromorphic chip: synaptic events x :math:`E_{synop}`; layers it cannot run (analog input:
    the direct-coded stem, the SE block, the pooled head input) go to a host ASIC.

``ops+memory``
    ASIC: Lemaire et al. 2022 (formula sheet in docs/energy.md): arithmetic plus one SRAM access
    :math:`E_{mem}(N, b) = \alpha N b + \beta` per weight read, membrane read/write, bias read,
    spike-buffer access, plus address arithmetic, with the leak / bias / reset update of every
    neuron at every step. The synaptic event count is the exact effective count (not Lemaire's
    interior fan-out), so stride, borders, groups and zero weights are exact.
    Neuromorphic chip: synaptic events x :math:`E_{synop}` + neuron updates x
    :math:`E_{neuron}` + spikes x :math:`E_{spike}` (per-event figures include the chip's own
    memory traffic); host layers as for the ASIC.

``dense`` (GPU / CPU, a LOWER BOUND)
    FLOPs x (TDP / peak): 2 FLOP per dense MAC at every step the layer runs, 4 FLOP per LIF
    update (decay, add, compare, reset), 1 per ReLU, 1 per pooling add or gate multiply.

``ops+memory`` takes a :class:`~nalln.energy.modes.Dataflow` for the MAC layers of an ASIC (and
a chip's host): no reuse (Lemaire, above) or reuse (``dataflow.py``). Which estimates are set
against which (one model on both sides, as ranges) is decided in ``pricing.py``; a chip's static
power, routing and host I/O are added there from ``chip_costs.py``.

Every term says whether it scales with spike activity (``variable``): the break-even firing rate
solves :math:`F + s V = E_{ANN}` for the activity scale :math:`s` (all spike counts scaled
uniformly) and reports :math:`s \times` the measured mean firing rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nalln.energy.counting import NetworkCounts, SynapticLayer
from nalln.energy.dataflow import reuse_reads
from nalln.energy.modes import DENSE_PRECISIONS, MODELS, CostModel, Dataflow, Precision
from nalln.energy.onchip_gates import asic_terms, chip_terms, dense_flops
from nalln.errors import NallnError
from nalln.hardware_targets.registry import TargetRegistry
from nalln.hardware_targets.schema import Target

MODEL_TITLES = {m: m.title for m in MODELS}
LIF_FLOPS = 4  # beta*U, +I, compare with threshold, reset multiply (nalln.models.neuron.lif_step)
PRECISION_KEYS = {p: p.dense_key for p in DENSE_PRECISIONS}

_ASIC_OPS = ("e_add", "e_mul")
_ASIC_MEMORY = (
    "e_add",
    "e_mul",
    "mem_pj_per_bit",
    "mem_pj_offset",
    "weight_bits",
    "activation_bits",
    "accumulator_bits",
)
_CHIP_OPS = ("e_synop",)
_CHIP_MEMORY = ("e_synop", "e_neuron_update")


def required_constants(kind: str, model: str) -> tuple[str, ...] | None:
    """Constants a model needs on a target kind; None when it does not apply to that kind."""
    if model not in MODELS:
        return None
    table = {
        ("asic", CostModel.OPS): _ASIC_OPS,
        ("asic", CostModel.OPS_MEMORY): _ASIC_MEMORY,
        ("neuromorphic", CostModel.OPS): _CHIP_OPS,
        ("neuromorphic", CostModel.OPS_MEMORY): _CHIP_MEMORY,
        ("gpu", CostModel.DENSE): ("pj_per_flop_fp32",),
        ("cpu", CostModel.DENSE): ("pj_per_flop_fp32",),
    }
    return table.get((kind, model))


def availability(target: Target, model: str, registry: TargetRegistry) -> str | None:
    """None when ``model`` can be computed for ``target``, else the reason it cannot."""
    need = required_constants(target.kind, model)
    if need is None:
        return f"model '{model}' does not apply to {target.kind} targets"
    source = registry.energy_source(target) if target.energy_proxy else target
    missing = source.missing(*need)
    if missing:
        return (
            f"target {target.id} lacks {', '.join(missing)}, so model '{model}' cannot be used "
            f"for it (add the constant(s) to {target.path})"
        )
    return None


@dataclass(frozen=True)
class Term:
    """One line of an energy estimate: ``count`` events of ``pj_each`` picojoules."""

    group: str  # layer group (synaptic layer, SE block, pooling)
    what: str
    count: float  # per inference
    pj_each: float
    variable: bool  # scales with spike activity
    on: str  # target id that executes it

    @property
    def pj(self) -> float:
        return self.count * self.pj_each


@dataclass
class Estimate:
    """Energy of one network on one target under one model (per inference)."""

    target: str
    model: str
    network: str  # snn | ann | ann-zero-skip
    precision: str | None = None
    terms: list[Term] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    proxy: str | None = None
    dataflow: str | None = None  # ops+memory on an ASIC / host: Dataflow

    def plus(self, terms: list[Term], notes: list[str]) -> Estimate:
        """A copy with more terms (chip static, routing, host I/O) and notes."""
        return Estimate(
            self.target,
            self.model,
            self.network,
            self.precision,
            [*self.terms, *terms],
            [*self.notes, *notes],
            self.proxy,
            self.dataflow,
        )

    @property
    def total_pj(self) -> float:
        return sum(t.pj for t in self.terms)

    @property
    def variable_pj(self) -> float:
        return sum(t.pj for t in self.terms if t.variable)

    @property
    def fixed_pj(self) -> float:
        return self.total_pj - self.variable_pj

    def by_group(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for t in self.terms:
            out[t.group] = out.get(t.group, 0.0) + t.pj
        return out

    def by_what(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for t in self.terms:
            out[t.what] = out.get(t.what, 0.0) + t.pj
        return out

    def off_chip_pj(self) -> float:
        return sum(t.pj for t in self.terms if t.on != self.target)

    def to_dict(self, with_terms: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "target": self.target,
            "model": self.model,
            "network": self.network,
            "precision": self.precision,
            "dataflow": self.dataflow,
            "energy_pj": self.total_pj,
            "fixed_pj": self.fixed_pj,
            "activity_dependent_pj": self.variable_pj,
            "host_pj": self.off_chip_pj(),
            "by_layer_pj": self.by_group(),
            "by_kind_pj": self.by_what(),
            "proxy": self.proxy,
            "notes": self.notes,
        }
        if with_terms:
            d["terms"] = [t.__dict__ | {"pj": t.pj} for t in self.terms]
        return d


def group_of(name: str) -> str:
    """Report grouping: SE sub-layers go under their SE block."""
    if ".se." in name:
        return name.split(".se.")[0] + ".se"
    return name


def _kernel_area(L: SynapticLayer) -> int:
    return math.prod(L.kernel) if L.kind != "linear" else 1


class _Asic:
    """Per-event energies of an ASIC target (pJ)."""

    def __init__(self, t: Target) -> None:
        self.t = t
        self.add = t.value("e_add")
        self.mul = t.value("e_mul")
        self.mac = t.value("e_mac") if t.has("e_mac") else self.add + self.mul
        self.acc = t.value("e_acc") if t.has("e_acc") else self.add

    def mem(self, words: int, bits_key: str | int) -> float:
        bits = bits_key if isinstance(bits_key, int) else self.t.value(bits_key)
        return self.t.value("mem_pj_per_bit") * words * bits + self.t.value("mem_pj_offset")


# -- per-layer term builders ------------------------------------------------------------


def _ops_terms(counts: NetworkCounts, a: _Asic, dense_macs: bool = False) -> list[Term]:
    """Model ``ops`` on an ASIC for any network (dense MACs for the conventional baseline)."""
    pi = counts.per_inference
    terms: list[Term] = []
    for L in counts.layers:
        g = group_of(L.name)
        if dense_macs:
            terms.append(Term(g, "MACs", pi(L.dense.sum()), a.mac, False, a.t.id))
            continue
        ac, mac = pi(L.ac.sum()), pi(L.mac.sum())
        if ac:
            terms.append(Term(g, "synaptic ACs", ac, a.add, L.spike_input, a.t.id))
        if mac:
            terms.append(Term(g, "MACs", mac, a.mac, False, a.t.id))
    terms += _extra_ops_terms(counts, a)
    if not dense_macs:
        terms += asic_terms(counts, a, memory=False)
    return terms


def _extra_ops_terms(counts: NetworkCounts, a: _Asic, memory: bool = False) -> list[Term]:
    pi = counts.per_inference
    terms: list[Term] = []
    for E in counts.extras:
        g = E.name
        adds = pi(E.adds)
        terms.append(Term(g, "pooling adds", adds, a.acc if memory else a.add, False, a.t.id))
        if E.muls:
            terms.append(Term(g, "SE gate multiplies", pi(E.muls), a.mul, False, a.t.id))
        if memory:
            if E.kind == "se_gate":
                cur = a.mem(E.elements, "accumulator_bits")
                terms.append(Term(g, "memory: current reads", 2 * adds, cur, False, a.t.id))
                terms.append(Term(g, "memory: current writes", adds, cur, False, a.t.id))
            else:
                bits = 1 if E.binary_input else "activation_bits"
                rd = a.mem(E.elements, bits)
                terms.append(Term(g, "memory: pooled input reads", adds, rd, False, a.t.id))
    return terms


def _memory_terms(
    counts: NetworkCounts,
    a: _Asic,
    ann: str | None = None,
    skip_neurons: bool = False,
    dataflow: Dataflow = Dataflow.NO_REUSE,
) -> list[Term]:
    """Model ``ops+memory`` (Lemaire et al.) on an ASIC.

    ``ann`` = "dense" / "effective" counts a conventional network; ``skip_neurons`` leaves the
    neuron terms out (they run on a neuromorphic chip while the layer runs on the host).
    ``dataflow`` sets the SRAM reads of analog (MAC) layers: one input and one weight read per
    MAC (Lemaire, no reuse) or one read per weight / input per layer (reuse, dataflow.py).
    Event-driven layers always read a weight per synaptic event: that is their dataflow.
    """
    pi = counts.per_inference
    terms: list[Term] = []
    tid = a.t.id

    def add(g: str, what: str, n: float, e: float, var: bool) -> None:
        if n:
            terms.append(Term(g, what, n, e, var, tid))

    for L in counts.layers:
        g = group_of(L.name)
        P = counts.population(L.population)
        cout = L.out_shape[0]
        if ann is None and L.spike_input:
            # event-driven layer: every input spike reads its weights and updates potentials
            P_lif = P is not None and P.kind == "lif"
            N = P.neurons if P is not None else L.out_elements
            U = N * counts.num_steps
            sop = pi(L.ac.sum() + L.mac.sum())
            th_in = pi(L.in_nonzero.sum())
            th_out = pi(P.spikes.sum()) if P_lif else 0.0
            pot = a.mem(N, "accumulator_bits")
            add(g, "synaptic accumulates", sop, a.acc, True)
            add(g, "memory: weight reads", sop, a.mem(L.weights, "weight_bits"), True)
            add(g, "memory: potential reads", sop, pot, True)
            add(g, "memory: potential writes", sop, pot, True)
            add(g, "memory: input spike reads", th_in, a.mem(L.in_elements, 1), True)
            add(g, "address arithmetic", 2 * th_in, a.mul + a.acc, True)
            add(g, "address arithmetic", th_in * _kernel_area(L), a.acc, True)
            if not skip_neurons and (P is None or P.source == L.name):
                # a population's own updates are charged once, with the synapse that feeds it
                # (not again with a recurrent synapse into the same population)
                add(g, "bias accumulates", U, a.acc, False)
                add(g, "memory: bias reads", U, a.mem(cout, "accumulator_bits"), False)
                add(g, "memory: potential reads", U, pot, False)
                add(g, "memory: potential writes", U, pot, False)
                if P_lif:
                    add(g, "leak multiplies", U, a.mul, False)
                    add(g, "reset on spike", th_out, a.acc, True)
                    add(g, "memory: output spike writes", th_out, a.mem(N, 1), True)
            continue
        # analog-input layer (or any layer of the conventional network): MAC formula
        if ann == "dense":
            macs, acs = pi(L.dense.sum()), 0.0
        else:  # a structurally analog layer whose input stayed binary (GAP of a 1x1 map)
            macs, acs = pi(L.mac.sum()), pi(L.ac.sum())
        S = L.steps_run
        out = L.out_elements
        add(g, "MACs", macs, a.mul + a.acc, False)
        add(g, "accumulates (binary input)", acs, a.acc, False)
        if dataflow is Dataflow.REUSE:
            in_reads, w_reads = reuse_reads(L, a.t)
        else:
            in_reads = w_reads = macs + acs
        add(g, "memory: input reads", in_reads, a.mem(L.in_elements, "activation_bits"), False)
        add(g, "memory: weight reads", w_reads, a.mem(L.weights, "weight_bits"), False)
        add(g, "memory: bias reads", out * S, a.mem(cout, "accumulator_bits"), False)
        add(g, "memory: output writes", out * S, a.mem(out, "accumulator_bits"), False)
        addr = (L.in_elements + out + cout * _kernel_area(L)) * S
        add(g, "address arithmetic", addr, a.acc, False)
        own = P is not None and P.source == L.name
        if ann is None and own and P.kind == "lif" and not skip_neurons:
            U = P.neurons * P.num_steps
            pot = a.mem(P.neurons, "accumulator_bits")
            th_out = pi(P.spikes.sum())
            if L.once:  # the stored current is read again at every step
                add(g, "memory: current reads", U, pot, False)
            add(g, "leak multiplies", U, a.mul, False)
            add(g, "memory: potential reads", U, pot, False)
            add(g, "memory: potential writes", U, pot, False)
            add(g, "reset on spike", th_out, a.acc, True)
            add(g, "memory: output spike writes", th_out, a.mem(P.neurons, 1), True)
    terms += _extra_ops_terms(counts, a, memory=True)
    if ann is None:
        terms += asic_terms(counts, a, memory=True)
    return terms


def _rebrand(terms: list[Term], on: str) -> list[Term]:
    return [Term(t.group, t.what, t.count, t.pj_each, t.variable, on) for t in terms]


def _chip_terms(
    counts: NetworkCounts,
    chip: Target,
    energy: Target,
    host: _Asic,
    model: str,
    dataflow: Dataflow = Dataflow.NO_REUSE,
) -> tuple[list[Term], list[str]]:
    """A neuromorphic chip runs the spike-input layers and every LIF population; the rest
    (analog-input layers, pooling, SE gating) runs on the host."""
    pi = counts.per_inference
    syn = energy.value("e_synop")
    terms: list[Term] = []
    notes: list[str] = []
    host_counts = NetworkCounts(
        counts.network,
        counts.num_steps,
        counts.n,
        [L for L in counts.layers if not L.spike_input],
        counts.populations,
        counts.extras,
    )
    for L in counts.layers:
        if L.spike_input:
            sop = pi(L.ac.sum() + L.mac.sum())
            terms.append(Term(group_of(L.name), "synaptic events", sop, syn, True, chip.id))
    terms += chip_terms(counts, chip.id, energy, memory=model != CostModel.OPS)
    if model == CostModel.OPS:
        terms += _rebrand(_ops_terms(host_counts, host), host.t.id)
    else:
        terms += _memory_terms(host_counts, host, skip_neurons=True, dataflow=dataflow)
        neuron = energy.value("e_neuron_update")
        spike = energy.value("e_spike") if energy.has("e_spike") else None
        if spike is None:
            notes.append(f"{energy.id} has no e_spike: spike transmission is not charged")
        for P in counts.populations:
            g = group_of(P.source or P.name)
            U = P.neurons * P.num_steps
            terms.append(Term(g, "neuron updates", U, neuron, False, chip.id))
            if spike is not None:
                terms.append(Term(g, "spikes sent", pi(P.spikes.sum()), spike, True, chip.id))
        for L in counts.layers:  # the readout (no population): non-spiking accumulators
            if L.spike_input and L.population is None:
                U = L.out_elements * counts.num_steps
                terms.append(Term(group_of(L.name), "neuron updates", U, neuron, False, chip.id))
    moved = sorted({group_of(L.name) for L in host_counts.layers} | {E.name for E in counts.extras})
    if moved:
        notes.append(
            f"runs on the host ({host.t.id}) because {chip.id} takes binary spikes only: "
            + ", ".join(moved)
        )
    return terms, notes


def _dense_terms(counts: NetworkCounts, t: Target, precision: Precision) -> list[Term]:
    e = t.value(str(precision.dense_key))
    pi = counts.per_inference
    terms: list[Term] = []
    for L in counts.layers:
        terms.append(Term(group_of(L.name), "MAC FLOPs", 2 * pi(L.dense.sum()), e, False, t.id))
    for P in counts.populations:
        per = LIF_FLOPS if P.kind == "lif" else 1
        what = "LIF update FLOPs" if P.kind == "lif" else "ReLU FLOPs"
        g = group_of(P.source or P.name)
        terms.append(Term(g, what, per * P.neurons * P.num_steps, e, False, t.id))
    for E in counts.extras:
        terms.append(Term(E.name, "pooling/gate FLOPs", pi(E.adds + E.muls), e, False, t.id))
    for G in counts.gates:
        terms.append(Term(f"{G.name}.se", "on-chip SE gate FLOPs", dense_flops(G), e, False, t.id))
    return terms


# -- public API ---------------------------------------------------------------------------


def estimate(
    counts: NetworkCounts,
    target: Target,
    model: str,
    registry: TargetRegistry,
    *,
    host: Target | None = None,
    network: str | None = None,
    precision: str = Precision.FP32,
    dataflow: Dataflow = Dataflow.NO_REUSE,
) -> Estimate:
    """Energy per inference of ``counts`` on ``target`` under ``model``.

    ``network``: "snn" (default for spiking counts), "ann" (dense MACs) or "ann-zero-skip"
    (effective MACs: an accelerator that skips zero activations). ``dataflow`` applies to
    ``ops+memory`` on an ASIC (and a chip's host): see :class:`~nalln.energy.modes.Dataflow`.
    """
    if model not in MODELS:
        raise NallnError(f"unknown energy model {model!r}; known models: {', '.join(MODELS)}")
    model = CostModel(model)
    precision = Precision(precision)
    reason = availability(target, model, registry)
    if reason:
        raise NallnError(reason)
    network = network or counts.network
    est = Estimate(target.id, model, network)
    if target.energy_proxy:
        est.proxy = target.energy_proxy
        est.notes.append(
            f"PROXY: {target.id} has no published per-operation energy; these are "
            f"{target.energy_proxy} figures"
        )
    if model is CostModel.DENSE:
        if precision.dense_key is None or precision.dense_key not in target.constants:
            raise NallnError(
                f"target {target.id} lacks {precision.dense_key}, so model 'dense' cannot "
                f"be used at {precision} for it"
            )
        est.precision = precision
        est.terms = _dense_terms(counts, target, precision)
        est.notes.append("lower bound: TDP / peak throughput, full utilisation, no memory traffic")
        return est
    if network != "snn" and target.kind != "asic":
        raise NallnError(f"a conventional network cannot run on {target.kind} target {target.id}")
    if target.kind == "asic":
        a = _Asic(target)
        ann = {"snn": None, "ann": "dense", "ann-zero-skip": "effective"}[network]
        if model is CostModel.OPS:
            est.terms = _ops_terms(counts, a, dense_macs=ann == "dense")
        else:
            est.dataflow = dataflow
            est.terms = _memory_terms(counts, a, ann=ann, dataflow=dataflow)
        return est
    if host is None or host.kind != "asic":
        raise NallnError(f"{target.id} needs an ASIC host target for its analog-input layers")
    reason = availability(host, model, registry)
    if reason:
        raise NallnError(f"host {host.id}: {reason}")
    energy = registry.energy_source(target)
    if model is CostModel.OPS_MEMORY:
        est.dataflow = dataflow
    est.terms, notes = _chip_terms(counts, target, energy, _Asic(host), model, dataflow)
    est.notes += notes
    return est


@dataclass(frozen=True)
class BreakEven:
    """Where the spiking network's energy equals the baseline's, scaling all spikes uniformly."""

    snn_pj: float
    baseline_pj: float
    baseline: str
    fixed_pj: float
    variable_pj: float
    measured_rate: float

    @property
    def scale(self) -> float | None:
        if self.variable_pj <= 0:
            return None
        return max(0.0, (self.baseline_pj - self.fixed_pj) / self.variable_pj)

    @property
    def rate(self) -> float | None:
        """Mean firing rate (spikes per neuron per step) at which both cost the same."""
        s = self.scale
        return None if s is None else s * self.measured_rate

    @property
    def snn_wins(self) -> bool:
        return bool(self.snn_pj < self.baseline_pj)

    def verdict(self) -> str:
        ratio = self.baseline_pj / self.snn_pj if self.snn_pj else math.inf
        head = (
            f"SNN {ratio:.2f}x cheaper than {self.baseline}"
            if self.snn_wins
            else f"SNN {1 / ratio:.2f}x dearer than {self.baseline}"
        )
        r = self.rate
        if r is None:
            return f"{head}; its cost does not depend on spikes, so there is no break-even rate"
        if self.fixed_pj >= self.baseline_pj:
            return (
                f"{head}; its activity-independent part alone ({self.fixed_pj / 1e6:.3g} uJ) "
                "exceeds the baseline: no firing rate makes it cheaper"
            )
        return (
            f"{head}; break-even at a mean firing rate of {r:.4f} spikes/neuron/step "
            f"(measured {self.measured_rate:.4f})"
            + ("; above 1, i.e. cheaper at any rate" if r >= 1 else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "snn_pj": self.snn_pj,
            "baseline_pj": self.baseline_pj,
            "snn_fixed_pj": self.fixed_pj,
            "snn_activity_dependent_pj": self.variable_pj,
            "measured_firing_rate": self.measured_rate,
            "break_even_scale": self.scale,
            "break_even_firing_rate": self.rate,
            "snn_wins": self.snn_wins,
            "verdict": self.verdict(),
        }


def break_even(snn: Estimate, baseline: Estimate, measured_rate: float) -> BreakEven:
    label = f"{baseline.network} on {baseline.target}" + (
        f" ({baseline.precision})" if baseline.precision else ""
    )
    return BreakEven(
        snn_pj=snn.total_pj,
        baseline_pj=baseline.total_pj,
        baseline=label,
        fixed_pj=snn.fixed_pj,
        variable_pj=snn.variable_pj,
        measured_rate=measured_rate,
    )
