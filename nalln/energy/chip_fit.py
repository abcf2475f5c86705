"""Does a network fit on a neuromorphic chip? Cores and chips from the per-core limits.

Each layer of neurons is placed on its own cores (no core shares two layers). A core holds as
many neurons of the layer as the three per-core limits allow:

* neurons per core;
* synapses per core: every neuron stores its own fan-in (convolutions expanded, no weight
  sharing: an upper bound for chips with convolutional synapse compression);
* input axons per core (fan-in): the distinct inputs a core's neurons read. A conv core holds a
  square spatial tile with all output channels (or a slice of channels at one position when a
  position has more channels than the core has neurons); its inputs are the tile's receptive
  field over the input channels it needs.

This is a greedy estimate, not a compiler's placement: cores = sum over layers of
ceil(neurons / neurons-per-core-that-fit), chips = ceil(cores / cores per chip), also bounded
by any per-chip neuron and synapse maxima. Layers with analog input (the direct-coded stem, the
SE gates, the pooled head input) run on the host; their neuron populations are on the chip and
receive their input from the host.

An on-chip SE gate (a run fine-tuned with ``--se onchip``) is placed on cores of its own, one
row per part before the LIF it gates (count, sum, fc1, fc2, product, delay; the parts and the
modelling assumptions are in :mod:`nalln.energy.onchip_gates`): the pointwise synapses end on
the product neurons, so the gated LIF keeps one synapse per neuron.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from nalln.energy.counting import NetworkCounts, SynapticLayer, count_model
from nalln.energy.onchip_gates import ASSUMPTIONS, GateCounts
from nalln.errors import NallnError
from nalln.hardware_targets.schema import Target

LIMIT_KEYS = (
    "neurons_per_core",
    "synapses_per_core",
    "fan_in_per_core",
    "cores_per_chip",
    "neurons_per_chip",
    "synapses_per_chip",
)


@dataclass(frozen=True)
class LayerFit:
    layer: str  # population (or readout) name
    fed_by: str | None
    input: str  # "spikes (on chip)" | "host (analog input)"
    neurons: int
    fan_in: int  # synapses per neuron stored on chip
    synapses: int
    per_core: int  # neurons placed per core
    cores: int
    binding: str  # which limit set per_core
    feasible: bool
    note: str = ""


@dataclass
class FitResult:
    target: str
    layers: list[LayerFit]
    limits: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @property
    def cores(self) -> int:
        return sum(L.cores for L in self.layers)

    @property
    def neurons(self) -> int:
        return sum(L.neurons for L in self.layers)

    @property
    def synapses(self) -> int:
        return sum(L.synapses for L in self.layers)

    @property
    def feasible(self) -> bool:
        return all(L.feasible for L in self.layers)

    def chips(self) -> int:
        lim = {k: v["value"] for k, v in self.limits.items()}
        n = math.ceil(self.cores / lim["cores_per_chip"]) if "cores_per_chip" in lim else 1
        if "neurons_per_chip" in lim:
            n = max(n, math.ceil(self.neurons / lim["neurons_per_chip"]))
        if "synapses_per_chip" in lim:
            n = max(n, math.ceil(self.synapses / lim["synapses_per_chip"]))
        return n

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "feasible": self.feasible,
            "cores": self.cores,
            "chips": self.chips(),
            "neurons": self.neurons,
            "synapses": self.synapses,
            "limits": self.limits,
            "layers": [L.__dict__ for L in self.layers],
            "notes": self.notes,
        }


def _axons(L: SynapticLayer, n: int) -> int:
    """Distinct inputs a core holding ``n`` neurons of conv/linear layer ``L`` reads."""
    if L.kind == "linear" or len(L.in_shape) != 3:
        return L.in_elements
    cin, hi, wi = L.in_shape
    cout = L.out_shape[0]
    kh, kw = L.kernel
    sh, sw = L.stride
    per_group_out = max(1, cout // L.groups)
    if n >= cout:
        positions = math.ceil(n / cout)  # a near-square tile of positions, all channels
        rows = min(L.out_shape[1], max(1, math.isqrt(positions)))
        cols = min(L.out_shape[2], math.ceil(positions / rows))
        fh = min(hi, (rows - 1) * sh + kh)
        fw = min(wi, (cols - 1) * sw + kw)
        return fh * fw * cin
    groups_spanned = math.ceil(n / per_group_out)
    return kh * kw * min(cin, groups_spanned * (cin // L.groups))


def _place(
    neurons: int,
    fan_in: int,
    L: SynapticLayer | None,
    limits: dict[str, float],
    loop_axons: int = 0,
) -> tuple[int, str, str]:
    """(neurons per core, binding limit, problem or '') for one layer; ``loop_axons``: the
    inputs a recurrent synapse adds (the population's own outputs, read by every core)."""
    npc = int(limits["neurons_per_core"])
    spc = limits.get("synapses_per_core")
    fin = limits.get("fan_in_per_core")

    def axons(n: int) -> int:
        return (_axons(L, n) if L is not None else 0) + loop_axons

    def ok(n: int) -> bool:
        if spc is not None and n * fan_in > spc:
            return False
        return not (fin is not None and (L is not None or loop_axons) and axons(n) > fin)

    if not ok(1):
        if spc is not None and fan_in > spc:
            return 0, "synapses_per_core", f"one neuron needs {fan_in} synapses > {int(spc)}"
        return 0, "fan_in_per_core", f"one neuron needs {axons(1)} input axons > {int(fin)}"
    lo, hi = 1, min(npc, neurons)
    while lo < hi:  # largest n that fits (the constraints grow with n)
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    if lo == min(npc, neurons):
        return lo, "neurons_per_core", ""
    if spc is not None and (lo + 1) * fan_in > spc:
        return lo, "synapses_per_core", ""
    return lo, "fan_in_per_core", ""


def structure(model: nn.Module, image_size: int, in_channels: int = 3) -> NetworkCounts:
    """Layer shapes and wiring from one forward pass on a random image (data-independent)."""
    x = torch.randn(
        1, in_channels, image_size, image_size, generator=torch.Generator().manual_seed(0)
    )
    return count_model(model, x, batch_size=1)


def fit_network(counts: NetworkCounts, target: Target) -> FitResult:
    """Cores and chips ``counts``' network needs on ``target``."""
    if target.kind != "neuromorphic":
        raise NallnError(f"fit is for neuromorphic targets; {target.id} is a {target.kind} target")
    if not target.has("neurons_per_core"):
        raise NallnError(
            f"target {target.id} has no neurons_per_core (its neurons per core are set by "
            "software), so fit cannot place it; targets with limits: loihi, loihi2, truenorth"
        )
    limits = {k: target.constants[k] for k in LIMIT_KEYS if k in target.constants}
    values = {k: c.value for k, c in limits.items()}
    rows: list[LayerFit] = []
    notes: list[str] = []
    placed_sources: set[str] = set()
    gates = {G.population: G for G in counts.gates}
    for P in counts.populations:
        G = gates.get(P.name)
        if G is not None:  # on-chip SE: the gate's parts, then the LIF fed by the products
            rows += gate_rows(G, counts.layer(G.layer), values)
            rows.append(_fit_row(P.name, f"{G.name}.se.product", P.neurons, 1, None, values))
            rows[-1] = replace(rows[-1], input=GRADED)
            placed_sources.add(G.layer)
            continue
        L = counts.layer(P.source) if P.source else None
        on_chip = L is not None and L.spike_input
        fan_in = L.fan_in if on_chip else 0
        loops = [
            R
            for R in counts.layers
            if R.population == P.name and R.name != P.source and R.spike_input
        ]  # recurrent synapses into the population: stored on its cores too
        fan_in += sum(R.fan_in for R in loops)
        loop_axons = sum(R.in_elements for R in loops)
        rows.append(
            _fit_row(
                P.name, P.source, P.neurons, fan_in, L if on_chip else None, values, loop_axons
            )
        )
        if P.source:
            placed_sources.add(P.source)
    for L in counts.layers:  # readouts: spike-input layers that feed no population
        if L.spike_input and L.population is None and L.name not in placed_sources:
            rows.append(
                _fit_row(f"{L.name} (readout)", L.name, L.out_elements, L.fan_in, L, values)
            )
    host = sorted({L.name for L in counts.layers if not L.spike_input})
    if host:
        notes.append(
            "runs on the host, feeding the chip's neurons (analog input): " + ", ".join(host)
        )
    notes.append(
        "synapses are expanded per neuron (no convolutional weight sharing): an upper bound"
    )
    if counts.gates:
        notes.append(ASSUMPTIONS)
    if "fan_in_per_core" not in values:
        notes.append(f"{target.id} publishes no per-core fan-in limit: not checked")
    if "synapses_per_core" not in values:
        notes.append(f"{target.id} publishes no per-core synapse limit: not checked")
    notes += list(target.notes)
    limit_info = {
        k: {"value": c.value, "unit": c.unit, "status": c.status, "source": c.source}
        for k, c in limits.items()
    }
    return FitResult(target.id, rows, limit_info, notes)


GRADED = "graded (on chip)"


def _part_layer(name: str, in_shape: tuple[int, ...], out: int, kernel: tuple[int, int] | None):
    """A synaptic layer of a gate part, for its input axons: a per-channel sum over the map
    (``kernel`` = the map, one group per channel) or a dense layer."""
    conv = kernel is not None
    return SynapticLayer(
        name=name,
        kind="depthwise" if conv else "linear",
        role="se",
        in_shape=in_shape,
        out_shape=(out, 1, 1) if conv else (out,),
        weights=0,
        nonzero_weights=0,
        kernel=kernel or (1,),
        stride=(1, 1) if conv else (1,),
        groups=out if conv else 1,
        num_steps=1,
    )


def gate_rows(G: GateCounts, pw: SynapticLayer, values: dict[str, float]) -> list[LayerFit]:
    """The placement of one on-chip SE gate's parts (before the LIF it gates)."""
    cin, h, w = G.in_shape
    C, H, hw = G.channels, G.hidden, G.hw
    b = f"{G.name}.se"
    count = _fit_row(
        f"{b}.count", pw.name, cin, hw, _part_layer(f"{b}.count", G.in_shape, cin, (h, w)), values
    )
    parts = [
        count,
        _fit_row(f"{b}.sum", f"{b}.count", C, cin, _part_layer(b, (cin,), C, None), values),
        _fit_row(f"{b}.fc1", f"{b}.sum", H, C, _part_layer(b, (C,), H, None), values),
        _fit_row(f"{b}.fc2", f"{b}.fc1", C, H, _part_layer(b, (H,), C, None), values),
        # the pointwise synapses (delayed) and one broadcast synapse from the channel's gate
        _fit_row(f"{b}.product", pw.name, C * hw, cin + 1, pw, values, loop_axons=C),
    ]
    parts[1:-1] = [replace(r, input=GRADED) for r in parts[1:-1]]
    parts[-1] = replace(parts[-1], input="spikes + graded (on chip)")
    delay = G.gate.scales.delay
    parts.append(
        LayerFit(
            layer=f"{b}.delay",
            fed_by=pw.name,
            input=GRADED,
            neurons=0,
            fan_in=0,
            synapses=0,
            per_core=0,
            cores=0,
            binding="-",
            feasible=True,
            note=f"{delay}-step synaptic delay, assumed (else {delay * C * hw:,} relay neurons)",
        )
    )
    return parts


def _fit_row(
    name: str,
    source: str | None,
    neurons: int,
    fan_in: int,
    L: SynapticLayer | None,
    values: dict[str, float],
    loop_axons: int = 0,
) -> LayerFit:
    per_core, binding, problem = _place(neurons, fan_in, L, values, loop_axons)
    cores = math.ceil(neurons / per_core) if per_core else 0
    return LayerFit(
        layer=name,
        fed_by=source,
        input="spikes (on chip)" if L is not None else "host (analog input)",
        neurons=neurons,
        fan_in=fan_in,
        synapses=neurons * fan_in,
        per_core=per_core,
        cores=cores,
        binding=binding,
        feasible=not problem,
        note=problem,
    )
