r"""On-chip SE gates (runs fine-tuned with ``--se onchip``): their cores and their work.

Such a run computes every SE gate on neuro-cores (``nalln.loihi.onchip_se``; docs/conversion.md
"SE on the chip"). Per gated block (C channels, H = C/4 hidden, HW positions, C_in pointwise
inputs, lag L) the chip holds the parts of the Lava graph ``conversion.lava_backend`` builds:

============  ===============================  ==========================================
part          neurons                          synapses per neuron (input messages)
============  ===============================  ==========================================
count         C_in spike-count compartments    HW unit synapses (binary spikes of the
                                               block's depthwise LIF)
sum           C accumulators                   C_in: a copy of the pointwise weights, since
                                               ``sum_hw (W s + b) = W sum_hw s + HW b``
                                               (graded: the spike counts)
fc1           H graded ReLU neurons            C, 8-bit even weights (graded ``q``)
fc2           C hard-sigmoid gate neurons      H (graded ``h``)
product       C·HW product neurons             C_in pointwise synapses (moved here from the
                                               LIF, delayed 4 - L steps) + 1 broadcast
                                               synapse from its channel's gate (graded)
delay         none                             Loihi 2 synaptic delays on the pointwise
                                               synapses (a modelling assumption)
gated LIF     C·HW (the layer's own)           1: product -> LIF, one to one (graded)
============  ===============================  ==========================================

Neurons and synapses are :meth:`~nalln.loihi.onchip_se.OnchipGate.cost` of the run's own
integer gate. Counting follows docs/energy.md: an event is one (nonzero message, nonzero weight)
pair, measured on the images from the values the gate's neurons hold
(:func:`~nalln.loihi.onchip_se.gate_stages`, the emulator's integers); binary events are the
spikes into the count compartments, graded events (24-bit payloads) those of the copy, fc1,
fc2, the broadcast and product -> LIF; every gate neuron updates at every step (clock-driven, as
the LIFs); a message is a nonzero graded output.

Pricing on a chip: a binary event at ``e_synop``. No cited figure prices a synaptic op on a
graded (24-bit payload) message: Loihi 1 has binary spikes only, and Intel published no
per-operation table for Loihi 2. A graded event is therefore a range: LOW ``e_synop`` (23.6 pJ,
Davies et al. 2018, Table 2: weight read and dendritic accumulate, which a graded op does too)
and HIGH ``e_synaptic_update`` (120 pJ, the same table: the read-modify-write of a synapse with
multi-bit arithmetic in the learning engine, the dearest per-synapse figure it gives, taken as
an upper figure for multiplying the payload by the weight: an assumption). A gate neuron's
program (add, shift, clip, multiply) is priced as a neuron update (``e_neuron_update``), a
message as ``e_spike``: both assumptions about Loihi 2's programmable neurons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nalln.loihi.onchip_se import OnchipGate, gate_stages

if TYPE_CHECKING:
    from nalln.energy.counting import NetworkCounts

BINARY_PARTS = ("count",)
GRADED_PARTS = ("sum", "fc1", "fc2", "broadcast", "product")
SENDERS = ("count", "sum", "fc1", "fc2", "product")  # parts whose neurons send graded messages
GRADED_LOW, GRADED_HIGH = "e_synop", "e_synaptic_update"
GRADED_NOTE = (
    "on-chip SE: no cited figure for a synaptic op on a graded (24-bit) message; priced from "
    f"{GRADED_LOW} (low: a binary synaptic op) to {GRADED_HIGH} (high: Loihi's synaptic "
    "read-modify-write, taken as the upper figure of a payload x weight multiply): an assumption"
)
ASSUMPTIONS = (
    "on-chip SE (modelling assumptions, docs/conversion.md 'SE on the chip'): the ReLU, "
    "hard-sigmoid and product neurons are Loihi 2 programmable-neuron programs (add, shift, "
    "clip, multiply), one compartment each; the main path waits 4 - lag steps in Loihi 2 "
    "synaptic delays on the pointwise synapses (no extra compartments; without delays it "
    "would need (4 - lag) C HW relay compartments per block); the pointwise synapses end on "
    "the product neurons, which feed each LIF through one synapse; the gates' graded messages "
    "are charged e_spike each but no mesh hops"
)


@dataclass
class GateCounts:
    """One on-chip SE gate: its shape, the run's integer gate, and its activity summed over
    the samples seen (per step; divide by ``n`` for per inference)."""

    name: str  # the SE block ("stages.0")
    layer: str  # the pointwise synaptic layer, whose synapses end on the product neurons
    population: str  # the gated LIF population
    in_shape: tuple[int, int, int]  # C_in, H, W: the pointwise layer's input
    gate: OnchipGate
    num_steps: int
    pw_nonzero: np.ndarray  # nonzero pointwise weights per input channel [C_in]
    events: dict[str, np.ndarray] = field(default_factory=dict)  # part -> per step
    sent: dict[str, np.ndarray] = field(default_factory=dict)  # sender -> messages per step

    def __post_init__(self) -> None:
        for part in (*BINARY_PARTS, *GRADED_PARTS):
            self.events.setdefault(part, np.zeros(self.num_steps))
        for part in SENDERS:
            self.sent.setdefault(part, np.zeros(self.num_steps))

    @property
    def in_channels(self) -> int:
        return int(self.in_shape[0])

    @property
    def hw(self) -> int:
        return int(self.in_shape[1] * self.in_shape[2])

    @property
    def channels(self) -> int:
        return self.gate.channels

    @property
    def hidden(self) -> int:
        return self.gate.hidden

    @property
    def cost(self) -> dict[str, int]:
        """Neurons and synapses per part (counted: ``OnchipGate.cost``)."""
        return self.gate.cost(self.in_channels)

    @property
    def neurons(self) -> int:
        return int(self.cost["neurons"])

    def observe(self, spikes: torch.Tensor, current: torch.Tensor) -> None:
        """Add one batch: ``spikes`` ``[T, B, C_in, H, W]`` into the pointwise layer, its
        integer ``current`` ``[T, B, C, H, W]`` (bias included) as the gate sees it."""
        T = spikes.shape[0]
        nz = (spikes != 0).to(torch.float64)
        cnt = nz.sum(dim=(-1, -2))  # [T, B, C_in]: the count compartments' graded messages
        v = gate_stages(self.gate, current)
        dev = current.device

        def column_nonzeros(w: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(w, np.float64)).to(dev)

        w1 = column_nonzeros((self.gate.w1 != 0).sum(0))  # nonzero weights per input channel
        w2 = column_nonzeros((self.gate.w2 != 0).sum(0))  # per hidden neuron
        pw = column_nonzeros(self.pw_nonzero)

        def add(into: dict[str, np.ndarray], part: str, per_step: torch.Tensor) -> None:
            into[part][:T] += per_step.reshape(T, -1).sum(1).cpu().double().numpy()

        def nonzero(t: torch.Tensor) -> torch.Tensor:
            return (t != 0).to(torch.float64)

        add(self.events, "count", nz)
        add(self.events, "sum", nonzero(cnt) * pw)
        add(self.events, "fc1", nonzero(v["q"]) * w1)
        add(self.events, "fc2", nonzero(v["h"]) * w2)
        add(self.events, "broadcast", nonzero(v["gl"]) * self.hw)
        add(self.events, "product", nonzero(v["y"]))
        add(self.sent, "count", nonzero(cnt))
        add(self.sent, "sum", nonzero(v["q"]))
        add(self.sent, "fc1", nonzero(v["h"]))
        add(self.sent, "fc2", nonzero(v["gl"]))
        add(self.sent, "product", nonzero(v["y"]))

    def __add__(self, other: GateCounts) -> GateCounts:
        """Both image sets' counts, as if counted in one pass (torchrun shards)."""
        return GateCounts(
            self.name,
            self.layer,
            self.population,
            self.in_shape,
            self.gate,
            self.num_steps,
            self.pw_nonzero,
            {k: v + other.events[k] for k, v in self.events.items()},
            {k: v + other.sent[k] for k, v in self.sent.items()},
        )

    def summary(self, n: int) -> dict[str, Any]:
        """Per inference (``n`` samples seen): the report's ``snn.onchip_se`` row."""
        per = max(1, n)
        c = self.cost
        return {
            "block": self.name,
            "pointwise_layer": self.layer,
            "population": self.population,
            "channels": self.channels,
            "hidden": self.hidden,
            "positions": self.hw,
            "in_channels": self.in_channels,
            "lag": self.gate.scales.lag,
            "main_path_delay_steps": self.gate.scales.delay,
            "neurons": {
                k.removeprefix("neurons_"): v for k, v in c.items() if k.startswith("neurons_")
            },
            "synapses": {
                k.removeprefix("synapses_"): v for k, v in c.items() if k.startswith("synapses_")
            },
            "neurons_total": c["neurons"],
            "synapses_total": c["synapses"],
            "binary_events": {k: float(self.events[k].sum()) / per for k in BINARY_PARTS},
            "graded_events": {k: float(self.events[k].sum()) / per for k in GRADED_PARTS},
            "messages_sent": {k: float(self.sent[k].sum()) / per for k in SENDERS},
            "neuron_updates": c["neurons"] * self.num_steps,
            "provenance": "counted: neurons/synapses from the run's integer gate; events and "
            "messages from the gate's integer values on these images",
        }


def totals(counts: NetworkCounts) -> dict[str, float]:
    """Per inference over every gate: binary and graded events, messages, neuron updates."""
    pi = counts.per_inference
    gates = counts.gates
    return {
        "binary_events": pi(sum(g.events[k].sum() for g in gates for k in BINARY_PARTS)),
        "graded_events": pi(sum(g.events[k].sum() for g in gates for k in GRADED_PARTS)),
        "messages": pi(sum(g.sent[k].sum() for g in gates for k in SENDERS)),
        "neuron_updates": float(sum(g.neurons * g.num_steps for g in gates)),
        "neurons": float(sum(g.neurons for g in gates)),
        "synapses": float(sum(g.cost["synapses"] for g in gates)),
    }


def _group(g: GateCounts) -> str:
    return f"{g.name}.se"


def chip_terms(counts: NetworkCounts, chip_id: str, energy: Any, memory: bool) -> list[Any]:
    """The gates' terms on a chip at the per-event figures (graded events at ``e_synop``, the
    low end; :func:`graded_surcharge` adds the high end). ``memory``: ops+memory (neuron
    updates and messages too)."""
    from nalln.energy.cost_models import Term

    pi = counts.per_inference
    syn = energy.value("e_synop")
    terms = []
    for g in counts.gates:
        grp = _group(g)
        binary = pi(sum(g.events[k].sum() for k in BINARY_PARTS))
        graded = pi(sum(g.events[k].sum() for k in GRADED_PARTS))
        terms.append(Term(grp, "on-chip SE: synaptic events (binary)", binary, syn, True, chip_id))
        terms.append(Term(grp, "on-chip SE: synaptic events (graded)", graded, syn, False, chip_id))
        if memory:
            U = g.neurons * g.num_steps
            neuron = energy.value("e_neuron_update")
            terms.append(Term(grp, "on-chip SE: neuron updates", U, neuron, False, chip_id))
            if energy.has("e_spike"):
                sent = pi(sum(g.sent[k].sum() for k in SENDERS))
                e = energy.value("e_spike")
                terms.append(Term(grp, "on-chip SE: graded messages sent", sent, e, False, chip_id))
    return terms


def graded_surcharge(counts: NetworkCounts, chip_id: str, energy: Any) -> tuple[list, list[str]]:
    """HIGH end: each graded event at ``e_synaptic_update`` instead of ``e_synop``."""
    from nalln.energy.cost_models import Term

    if not counts.gates:
        return [], []
    if not energy.has(GRADED_LOW, GRADED_HIGH):
        return [], [f"{chip_id}: no {GRADED_HIGH}: graded SE events priced at {GRADED_LOW} only"]
    extra = energy.value(GRADED_HIGH) - energy.value(GRADED_LOW)
    terms = [
        Term(
            _group(g),
            "on-chip SE: graded events at the high figure",
            counts.per_inference(sum(g.events[k].sum() for k in GRADED_PARTS)),
            extra,
            False,
            chip_id,
        )
        for g in counts.gates
    ]
    return terms, [GRADED_NOTE]


def asic_terms(counts: NetworkCounts, asic: Any, memory: bool) -> list[Any]:
    """The same gate arithmetic on an ASIC running the SNN: binary events as adds, graded
    events as MACs; with memory, one weight read per graded event and a state read and write
    per neuron update (the gate's SRAM traffic, Lemaire's per-access energy)."""
    from nalln.energy.cost_models import Term

    pi = counts.per_inference
    tid = asic.t.id
    terms = []
    for g in counts.gates:
        grp = _group(g)
        binary = pi(sum(g.events[k].sum() for k in BINARY_PARTS))
        graded = pi(sum(g.events[k].sum() for k in GRADED_PARTS))
        add = asic.acc if memory else asic.add
        mac = asic.mul + asic.acc if memory else asic.mac
        terms.append(Term(grp, "on-chip SE: accumulates (binary)", binary, add, True, tid))
        terms.append(Term(grp, "on-chip SE: MACs (graded)", graded, mac, False, tid))
        if memory:
            c = g.cost
            w = asic.mem(int(c["synapses"]), "weight_bits")
            state = asic.mem(g.neurons, "accumulator_bits")
            U = g.neurons * g.num_steps
            terms.append(Term(grp, "memory: weight reads", binary + graded, w, False, tid))
            terms.append(Term(grp, "memory: potential reads", U, state, False, tid))
            terms.append(Term(grp, "memory: potential writes", U, state, False, tid))
    return terms


def dense_flops(g: GateCounts) -> float:
    """FLOPs per inference of the gate on dense hardware: per step the pooling adds and gate
    multiplies (C HW each) and fc1 / fc2 (2 FLOP per MAC)."""
    per_step = 2 * g.channels * g.hw + 2 * 2 * g.channels * g.hidden
    return float(per_step * g.num_steps)
