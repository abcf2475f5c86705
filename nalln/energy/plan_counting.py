"""Counting a deployment plan (any NIR graph nalln lowers) on given inputs, by counting.py's rules.

A NIR graph another tool wrote has no torch model to hook, so the counts come from the plan
``nalln.conversion.plan.lower`` makes and the spikes of its float64 reference simulation
(:func:`nalln.ir.reference.run_plan`, the reference ``nalln simulate`` compares every back-end
with). The rules are those of :mod:`nalln.energy.counting` (NeuroBench 2.3), applied per stage:

* a synapse counts ACs when every input value of the call is -1, 0 or 1 (spikes), else MACs
  (the first layer on graded inputs, graded events); effective = (nonzero input, nonzero
  weight) pairs through the exact fan-out map of :mod:`nalln.energy.fanout`; dense = every pair;
* a held input (direct coding) gives the first synapse the same current at every step, so it is
  computed once per inference, as NeurALLNet's stem; per-step inputs are counted at every step;
* a graph with branches and merges: every edge's synapse is counted on what it reads (the input
  or a population's spikes; where a Delay precedes it, the delayed spikes: a spike delayed past
  the window's last step is never processed); the ReLU twin reads every value undelayed;
* a recurrent synapse (``neuron -> w -> neuron``) reads the population's spikes of the previous
  step: counted at steps 1..T-1 (NIR's one-step delay: nothing arrives at step 0);
* where lowering folded a pooling node into the next synapse, that synapse is counted as
  lowered: it reads the un-pooled spikes with the repeated weights, so each spike reaches every
  output its pooling window fed (no pooling adds; ACs where a pooled layer would do MACs);
* an SE side-car gate (hybrid exports) counts its fc1 / fc2 as MAC layers and its pooling adds
  and gate multiplies as extra operations, as the hooks count NeurALLNet's SE blocks.

The conventional twin is the same synapses with ReLU instead of every neuron and T = 1, as
:mod:`nalln.energy.baseline` makes for NeurALLNet; per-step inputs enter it as their mean over
the steps (one frame). A recurrent synapse is not in it (at T = 1 its input never arrives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nalln.conversion.nir_io import Artefact, chain_of
from nalln.energy.counting import ExtraOps, NetworkCounts, Population, SynapticLayer
from nalln.energy.fanout import fanout_map
from nalln.ir.drive import Drive
from nalln.ir.plan import PLAN_INPUT, GateSpec, Plan, Synapse
from nalln.ir.reference import apply_gate, apply_synapse, delay_trace, run_plan

POOL_TYPES = ("AvgPool2d", "SumPool2d")
SYNAPSE_TYPES = ("Conv1d", "Conv2d", "Affine", "Linear")


def synapse_module(syn: Synapse) -> nn.Module:
    """The synapse as a torch layer (no bias), so that :func:`fanout_map` counts it exactly."""
    w = torch.as_tensor(np.asarray(syn.weight), dtype=torch.float64)
    if syn.kind == "conv":
        co, ci_g, kh, kw = w.shape
        layer: nn.Module = nn.Conv2d(
            ci_g * syn.groups,
            co,
            (kh, kw),
            stride=syn.stride,
            padding=syn.padding,
            groups=syn.groups,
            bias=False,
            dtype=torch.float64,
        )
    else:
        layer = nn.Linear(int(w.shape[1]), int(w.shape[0]), bias=False, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(w)
    return layer


def _dense_module(w: np.ndarray) -> nn.Module:
    return synapse_module(Synapse("dense", w, np.zeros(w.shape[0]), (w.shape[1],), (w.shape[0],)))


def _kind(syn: Synapse) -> str:
    if syn.kind != "conv":
        return "linear"
    cin = syn.weight.shape[1] * syn.groups
    if syn.groups > 1 and syn.groups == cin:
        return "depthwise"
    return "pointwise" if syn.weight.shape[2:] == (1, 1) else "conv"


@dataclass
class _Counted:
    """A synaptic layer with its fan-out maps (one sample, flattened input)."""

    layer: SynapticLayer
    fan: torch.Tensor  # [in_elements] effective ops per nonzero input element
    dense: float  # dense ops per sample per call

    def count(self, x: torch.Tensor, steps: list[int], batch: int) -> None:
        """Count one call on ``x`` [S, B, ...] (S = len(steps)) arriving at ``steps``."""
        L = self.layer
        flat = x.reshape(len(steps), batch, -1)
        nz = (flat != 0).sum(1).to(torch.float64)  # [S, in_elements]
        ops = (nz @ self.fan).numpy()
        binary = not bool(((flat != 0) & (flat != 1) & (flat != -1)).any())
        target = L.ac if binary else L.mac
        idx = np.asarray(steps)
        target[idx] += ops
        L.dense[idx] += self.dense * batch
        L.in_nonzero[idx] += nz.sum(1).numpy()
        if binary:
            L.calls_binary += 1
        else:
            L.calls_analog += 1


def _layer(
    name: str,
    module: nn.Module,
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    kind: str,
    role: str,
    T: int,
    *,
    once: bool = False,
    spike_input: bool = False,
    population: str | None = None,
    stride: tuple[int, ...] = (1,),
    groups: int = 1,
) -> _Counted:
    w = module.weight.detach()
    flat_in = (math.prod(in_shape),) if isinstance(module, nn.Linear) else in_shape
    eff = fanout_map(module, flat_in).reshape(-1).to(torch.float64)
    dense = float(fanout_map(module, flat_in, dense=True).sum())
    L = SynapticLayer(
        name=name,
        kind=kind,
        role=role,
        in_shape=tuple(int(s) for s in in_shape),
        out_shape=tuple(int(s) for s in out_shape),
        weights=int(w.numel()),
        nonzero_weights=int((w != 0).sum()),
        kernel=tuple(int(k) for k in w.shape[2:]) if kind != "linear" else (1,),
        stride=tuple(int(s) for s in stride),
        groups=int(groups),
        num_steps=T,
        once=once,
        spike_input=spike_input,
        population=population,
    )
    return _Counted(L, eff, dense)


def _gate_layers(gate: GateSpec, T: int) -> tuple[_Counted, _Counted, ExtraOps]:
    hidden, c = gate.w1.shape
    fc1 = _layer(f"{gate.name}.fc1", _dense_module(gate.w1), (c,), (hidden,), "linear", "se", T)
    fc2 = _layer(f"{gate.name}.fc2", _dense_module(gate.w2), (hidden,), (c,), "linear", "se", T)
    return fc1, fc2, ExtraOps(gate.name, "se_gate", 0, T)


class PlanCounter:
    """Counts of one plan over batches of inputs: the spiking network (``network='snn'``, T
    steps of the reference) or its ReLU twin (``'ann'``, one step)."""

    def __init__(self, plan: Plan, drive: Drive, network: str = "snn") -> None:
        self.plan = plan
        self.drive = drive
        self.network = network
        self.T = plan.num_steps if network == "snn" else 1
        once = network == "snn" and drive is Drive.HELD and self.T > 1
        self.layers: dict[int, _Counted] = {}
        self.recurrent: dict[int, _Counted] = {}
        self.gates: dict[int, tuple[_Counted, _Counted, ExtraOps]] = {}
        self.populations: dict[int, Population] = {}
        self.n = 0
        kind = "lif" if network == "snn" else "relu"
        self.merged: dict[tuple[int, int], _Counted] = {}  # (stage, j): its j-th merged synapse
        for i, st in enumerate(plan.stages):
            syn = st.synapse
            pop = st.neuron.name if st.neuron is not None else None
            role = "input" if i == 0 else ("readout" if st.neuron is None else "block")
            conv = syn.kind == "conv"  # a Conv1d is counted as the height-1 conv it runs as
            self.layers[i] = _layer(
                syn.source or st.name,
                synapse_module(syn),
                syn.in_image if conv else syn.in_shape,
                syn.out_image if conv else syn.out_shape,
                _kind(syn),
                role,
                self.T,
                once=once and i == 0,
                spike_input=i > 0,
                population=pop,
                stride=syn.stride if syn.kind == "conv" else (1,),
                groups=syn.groups,
            )
            for j, m in enumerate(st.merged):  # a merge: every edge's synapse is counted
                graded = plan.reads(i, m) == PLAN_INPUT
                self.merged[i, j] = _layer(
                    m.source or f"{st.name}.merged.{j}",
                    synapse_module(m),
                    m.in_shape,
                    m.out_shape,
                    _kind(m),
                    "input" if graded else role,
                    self.T,
                    once=once and graded and m.delay is None,
                    spike_input=not graded,
                    population=pop,
                    stride=m.stride if m.kind == "conv" else (1,),
                    groups=m.groups,
                )
            if st.gate is not None:
                self.gates[i] = _gate_layers(st.gate, self.T)
            if st.neuron is not None:
                self.populations[i] = Population(
                    st.neuron.name, kind, tuple(st.neuron.shape), self.T, syn.source or st.name
                )
            if st.recurrent is not None and network == "snn":
                r = st.recurrent
                self.recurrent[i] = _layer(
                    r.source or f"{st.name}.recurrent",
                    synapse_module(r),
                    r.in_shape,
                    r.out_shape,
                    "linear",
                    "recurrent",
                    self.T,
                    spike_input=True,
                    population=pop,
                )

    # -- counting ----------------------------------------------------------------------------
    def _gate(self, i: int, gate: GateSpec, cur: torch.Tensor, steps: list[int], b: int) -> None:
        """SE side-car on the current ``cur`` [S, B, C, H, W]: fc1 on the pooled current, fc2
        on its ReLU, one add (pooling) and one multiply (gate) per element of the current."""
        fc1, fc2, extra = self.gates[i]
        pooled = cur.mean(dim=(3, 4))
        d = dict(dtype=cur.dtype)
        hidden = torch.relu(
            pooled @ torch.as_tensor(gate.w1, **d).T + torch.as_tensor(gate.b1, **d)
        )
        fc1.count(pooled, steps, b)
        fc2.count(hidden, steps, b)
        extra.elements = math.prod(cur.shape[2:])
        count = float(extra.elements * len(steps) * b)
        extra.adds += count
        extra.muls += count

    def _currents(self, syn: Synapse, x: torch.Tensor) -> torch.Tensor:
        """``apply_synapse`` over a leading step axis: [S, B, ...] -> [S, B, ...]."""
        s, b = x.shape[:2]
        out = apply_synapse(syn, x.reshape(s * b, *x.shape[2:]))
        return out.reshape(s, b, *out.shape[1:])

    @torch.no_grad()
    def count_snn(self, x: torch.Tensor) -> torch.Tensor:
        """Count one batch ``x`` on the reference simulation; returns its output ``[T, B, K]``."""
        plan, T, b = self.plan, self.T, int(x.shape[0])
        trace = run_plan(plan, x)
        all_steps = list(range(T))
        held = self.drive is Drive.HELD
        h = x.to(torch.float64).unsqueeze(0) if held else self.drive.step_major(x, T).double()
        values = {PLAN_INPUT: h}  # what each synapse reads: [S, B, ...] (S = 1: held input)

        def reads(i: int, syn: Synapse) -> torch.Tensor:
            v = values[plan.reads(i, syn)]
            if syn.delay is None:
                return v
            return delay_trace(v.expand(T, *v.shape[1:]) if v.shape[0] != T else v, syn.delay)

        for i, st in enumerate(plan.stages):
            counted = [(self.layers[i], st.synapse)]
            counted += [(self.merged[i, j], m) for j, m in enumerate(st.merged)]
            for layer, syn in counted:
                src = reads(i, syn)
                steps = [0] if (layer.layer.once and src.shape[0] == 1) else all_steps
                inp = src.expand(T, *src.shape[1:]) if len(steps) == T else src
                layer.count(inp, steps, b)
            if st.gate is not None:
                steps = [0] if (i == 0 and self.layers[0].layer.once) else all_steps
                inp = h.expand(T, *h.shape[1:]) if (i == 0 and held and len(steps) == T) else h
                cur = self._currents(st.synapse, inp)
                if len(steps) == 1 and T > 1:
                    cur = cur.expand(T, *cur.shape[1:])
                self._gate(i, st.gate, cur, all_steps, b)
            if st.neuron is None:
                continue
            s = trace.spikes[st.name]  # [T, B, ...] bool
            self.populations[i].spikes += s.reshape(T, b, -1).sum((1, 2)).double().numpy()
            if i in self.recurrent and T > 1:
                self.recurrent[i].count(s[:-1].double(), all_steps[1:], b)
            h = values[st.name] = s.double()
        self.n += b
        return trace.outputs

    @torch.no_grad()
    def count_ann(self, x: torch.Tensor) -> None:
        """Count one batch on the ReLU twin (one step; per-step inputs as their mean)."""
        b = int(x.shape[0])
        h = x.double() if self.drive is Drive.HELD else x.double().mean(1)
        values = {PLAN_INPUT: h}  # a delay has no meaning in one step: the twin reads undelayed
        for i, st in enumerate(self.plan.stages):
            cur = None
            counted = [(self.layers[i], st.synapse)]
            counted += [(self.merged[i, j], m) for j, m in enumerate(st.merged)]
            for layer, syn in counted:
                src = values[self.plan.reads(i, syn)]
                layer.count(src.unsqueeze(0), [0], b)
                c = apply_synapse(syn, src)
                cur = c if cur is None else cur + c.reshape(cur.shape)
            if st.gate is not None:
                self._gate(i, st.gate, cur.unsqueeze(0), [0], b)
                cur = apply_gate(st.gate, cur)
            if st.neuron is None:
                h = cur
                continue
            y = torch.relu(cur).reshape(b, *st.neuron.shape)
            self.populations[i].spikes[0] += float((y != 0).sum())
            h = values[st.name] = y
        self.n += b

    def result(self) -> NetworkCounts:
        layers: list[SynapticLayer] = []
        extras: list[ExtraOps] = []
        for i, st in enumerate(self.plan.stages):
            layers.append(self.layers[i].layer)
            layers += [self.merged[i, j].layer for j in range(len(st.merged))]
            if i in self.gates:
                fc1, fc2, extra = self.gates[i]
                layers += [fc1.layer, fc2.layer]
                extras.append(extra)
            if i in self.recurrent:
                layers.append(self.recurrent[i].layer)
        pops = [self.populations[i] for i in sorted(self.populations)]
        return NetworkCounts(self.network, self.T, self.n, layers, pops, extras)


def count_plan(
    plan: Plan, x: torch.Tensor, batch_size: int = 16
) -> tuple[NetworkCounts, NetworkCounts, torch.Tensor]:
    """(spiking counts, ReLU-twin counts, reference outputs ``[T, N, K]``) of ``plan`` on ``x``
    (``[N, *input]`` held or ``[N, T, *input]`` per step)."""
    drive = Drive.of(x, plan.input_shape)
    drive.steps(x, plan.num_steps)
    snn = PlanCounter(plan, drive, "snn")
    ann = PlanCounter(plan, drive, "ann")
    outputs = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        outputs.append(snn.count_snn(xb))
        ann.count_ann(xb)
    return snn.result(), ann.result(), torch.cat(outputs, 1)


def plan_structure(plan: Plan) -> NetworkCounts:
    """Layers and populations of ``plan`` with no counts (what the chip fit needs; no data)."""
    return PlanCounter(plan, Drive.HELD, "snn").result()


def folded_pools(artefact: Artefact) -> dict[str, str]:
    """Synapse (NIR node) -> the pooling node lowering folded into it."""
    out: dict[str, str] = {}
    for i, seg in enumerate(artefact.segments):
        pending: dict[str, str | None] = {}  # node -> the pooling its output still carries
        for item in chain_of(seg, f"segment {i}"):
            kind = type(item.node).__name__
            carried = next((pending[p] for p in item.preds if pending.get(p)), None)
            if kind in POOL_TYPES:
                pending[item.name] = item.name
            elif kind in SYNAPSE_TYPES:
                if carried is not None:
                    out[item.name] = carried
                pending[item.name] = None
            else:
                pending[item.name] = carried
    return out
