"""Counting what a network does on real inputs: spikes, synaptic operations, MACs, neuron updates.

Forward hooks on the torch model observe every synaptic layer (Linear, ConvNd) and every neuron
population (LIF, or ReLU in the conventional baseline) during ordinary inference. The rules are
NeuroBench 2.3's (``neurobench.metrics.workload.SynapticOperations``):

* a call of a synaptic layer counts as accumulates (ACs) when every input value is -1, 0 or 1,
  else as multiply-accumulates (MACs);
* the effective count is the number of (nonzero input, nonzero weight) pairs that meet in the
  layer, exact for stride, padding, groups and zero weights (:mod:`nalln.energy.fanout`);
* "dense" counts every pair (all-ones weights and inputs); bias is not an operation.

Everything is normalised **per inference** (one image classified, all T time steps summed)
and kept per time step as well. Time-folded tensors (``[T*B, ...]``, time-major) are split into
steps; a layer that receives ``[B, ...]`` (the direct-coded stem, computed once per image and
repeated) is recorded as computed once, at step 0.

Beyond NeuroBench: neuron populations (neurons, spikes, membrane updates = every neuron at every
step, as clock-driven hardware does), the SE block's pooling adds and gate multiplies, the
head's global-average-pooling adds, and for every synaptic layer whether its input is
structurally a spike tensor (the very output of a neuron population), which the hardware fit
uses. BatchNorm is treated as folded into the preceding layer: it costs no operation.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from nalln.energy.fanout import SYNAPTIC_TYPES, fanout_map, forward_with, weight_mask
from nalln.loihi.onchip_se import OnchipSE
from nalln.models.blocks import SpikingDSBlock, SpikingHead, SqueezeExcite
from nalln.models.neuron import LIF

POPULATION_TYPES: tuple[type[nn.Module], ...] = (LIF, nn.ReLU)


@dataclass
class SynapticLayer:
    """Counts of one Linear/Conv layer, summed over the samples seen (divide by ``n``)."""

    name: str
    kind: str  # conv | depthwise | pointwise | linear
    role: str  # stem | block | se | head
    in_shape: tuple[int, ...]  # one sample, one step
    out_shape: tuple[int, ...]
    weights: int
    nonzero_weights: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    groups: int
    num_steps: int
    once: bool = False  # computed once per inference, not per step
    spike_input: bool = False  # input is structurally a population's spike output
    population: str | None = None  # the neuron population this layer feeds
    ac: np.ndarray = field(default_factory=lambda: np.zeros(0))  # effective ACs per step
    mac: np.ndarray = field(default_factory=lambda: np.zeros(0))  # effective MACs per step
    dense: np.ndarray = field(default_factory=lambda: np.zeros(0))  # dense ops per step
    in_nonzero: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per step
    calls_binary: int = 0
    calls_analog: int = 0

    def __post_init__(self) -> None:
        for name in ("ac", "mac", "dense", "in_nonzero"):
            if getattr(self, name).size == 0:
                setattr(self, name, np.zeros(self.num_steps))

    @property
    def in_elements(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_elements(self) -> int:
        return math.prod(self.out_shape)

    @property
    def steps_run(self) -> int:
        return 1 if self.once else self.num_steps

    @property
    def binary(self) -> bool:
        """Counted as ACs (every call had binary input), as NeuroBench decides per call."""
        return self.calls_analog == 0 and self.calls_binary > 0

    @property
    def fan_in(self) -> int:
        """Inputs per output neuron (interior, ignoring padding and zero weights)."""
        return self.weights // max(1, self.out_shape[0])


@dataclass
class Population:
    """A layer of neurons (LIF) or activations (ReLU): size and output events."""

    name: str
    kind: str  # lif | relu
    shape: tuple[int, ...]
    num_steps: int
    source: str | None = None  # synaptic layer feeding it
    spikes: np.ndarray = field(default_factory=lambda: np.zeros(0))  # nonzero outputs per step

    def __post_init__(self) -> None:
        if self.spikes.size == 0:
            self.spikes = np.zeros(self.num_steps)

    @property
    def neurons(self) -> int:
        return math.prod(self.shape)


@dataclass
class ExtraOps:
    """Operations outside synaptic layers: pooling adds, SE gate multiplies (per step)."""

    name: str
    kind: str  # se_gate | gap
    elements: int  # elements of the tensor operated on, one sample, one step
    steps: int
    binary_input: bool = False
    adds: float = 0.0  # summed over samples and steps
    muls: float = 0.0


@dataclass
class NetworkCounts:
    """Everything counted on one network over ``n`` samples; per-inference views as properties."""

    network: str  # "snn" | "ann"
    num_steps: int
    n: int
    layers: list[SynapticLayer]
    populations: list[Population]
    extras: list[ExtraOps]
    gates: list[Any] = field(default_factory=list)  # on-chip SE: onchip_gates.GateCounts

    def per_inference(self, value: float | np.floating) -> float:
        """A sum over the ``n`` samples seen -> per inference (a plain float)."""
        return float(value) / max(1, self.n)

    def layer(self, name: str) -> SynapticLayer:
        return next(L for L in self.layers if L.name == name)

    def population(self, name: str | None) -> Population | None:
        return next((p for p in self.populations if p.name == name), None)

    @property
    def totals(self) -> dict[str, float]:
        """Per-inference totals."""
        pi = self.per_inference
        spikes = sum(float(p.spikes.sum()) for p in self.populations)
        neuron_steps = sum(p.neurons * p.num_steps for p in self.populations)
        return {
            "synaptic_acs": pi(sum(float(L.ac.sum()) for L in self.layers)),
            "synaptic_macs": pi(sum(float(L.mac.sum()) for L in self.layers)),
            "dense_ops": pi(sum(float(L.dense.sum()) for L in self.layers)),
            "spikes": pi(spikes),
            "neurons": float(sum(p.neurons for p in self.populations)),
            "membrane_updates": float(neuron_steps),
            "firing_rate": (pi(spikes) / neuron_steps) if neuron_steps else 0.0,
            "extra_adds": pi(sum(e.adds for e in self.extras)),
            "extra_muls": pi(sum(e.muls for e in self.extras)),
        }


def _kind(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return "linear"
    if layer.groups > 1 and layer.groups == layer.in_channels:
        return "depthwise"
    if all(k == 1 for k in layer.kernel_size):
        return "pointwise"
    return "conv"


def _is_binary(x: torch.Tensor) -> bool:
    """NeuroBench's test: every value is -1, 0 or 1."""
    return not bool(((x != 0) & (x != 1) & (x != -1)).any())


class OpCounter:
    """Hooks that count a model's work during ``model(x)``; use :meth:`batch` around each call."""

    def __init__(self, model: nn.Module, num_steps: int, network: str = "snn") -> None:
        self.model = model
        self.T = int(num_steps)
        self.network = network
        self.n = 0
        self._batch: int | None = None
        self.layers: dict[str, SynapticLayer] = {}
        self.populations: dict[str, Population] = {}
        self.extras: dict[str, ExtraOps] = {}
        self._fanout: dict[tuple[str, tuple[int, ...]], tuple[torch.Tensor, float]] = {}
        self._spike_outputs: dict[int, weakref.ref] = {}
        self._last_synaptic: str | None = None
        self._handles: list[Any] = []
        self.gates: dict[str, Any] = {}
        self._gate_input: dict[str, torch.Tensor] = {}
        se_children = {
            f"{n}.{c}" if n else c
            for n, m in model.named_modules()
            if isinstance(m, SqueezeExcite)
            for c, _ in m.named_modules()
            if c
        }
        self._se_names = se_children
        for name, m in model.named_modules():
            if isinstance(m, SYNAPTIC_TYPES):
                self._handles.append(m.register_forward_pre_hook(self._synaptic_hook(name)))
            elif isinstance(m, POPULATION_TYPES):
                self._handles.append(m.register_forward_hook(self._population_hook(name)))
            elif isinstance(m, SqueezeExcite):
                self._handles.append(m.register_forward_pre_hook(self._extra_hook(name, "se_gate")))
            if isinstance(m, SpikingDSBlock) and isinstance(m.se, OnchipSE):
                self._watch_gate(name, m)
        # The head pools its input (GAP) before its first Linear; the pooled tensor is gone by
        # then, so the pool is counted from the last population's output shape.
        self._gap_layers = {
            f"{n}.fc1" if m.fc1 is not None else f"{n}.fc2": f"{n}.gap"
            for n, m in model.named_modules()
            if isinstance(m, SpikingHead)
        }
        self._last_population: tuple[tuple[int, ...], bool] | None = None

    # -- bookkeeping ---------------------------------------------------------------------
    @contextmanager
    def batch(self, size: int) -> Iterator[None]:
        """Count one forward pass over ``size`` samples."""
        self._batch = int(size)
        self._spike_outputs.clear()
        self._last_synaptic = None
        try:
            yield
        finally:
            self.n += self._batch
            self._batch = None
            self._spike_outputs.clear()

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _steps_of(self, x: torch.Tensor, name: str) -> tuple[int, bool]:
        """(steps in this call, computed once?) from the leading dimension."""
        if self._batch is None:
            raise RuntimeError("run the model inside OpCounter.batch(size)")
        lead = x.shape[0]
        if lead == self._batch * self.T:
            return self.T, False
        if lead == self._batch:
            return 1, self.T > 1
        raise RuntimeError(
            f"{name}: leading dimension {lead} is neither batch {self._batch} nor T*batch"
        )

    def _fanouts(self, name: str, layer: nn.Module, in_shape: tuple[int, ...]):
        key = (name, in_shape)
        if key not in self._fanout:
            eff = fanout_map(layer, in_shape)
            dense = float(fanout_map(layer, in_shape, dense=True).sum())
            self._fanout[key] = (eff.to(torch.float64), dense)
        return self._fanout[key]

    def _role(self, name: str) -> str:
        if name in self._se_names:
            return "se"
        if name.startswith("stem"):
            return "stem"
        if name.startswith("head"):
            return "head"
        return "block"

    # -- hooks ---------------------------------------------------------------------------
    def _synaptic_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach()
            steps, once = self._steps_of(x, name)
            in_shape = tuple(x.shape[1:])
            L = self.layers.get(name)
            if L is None:
                w = module.weight.detach()
                conv = not isinstance(module, nn.Linear)
                probe = torch.zeros((1, *in_shape), dtype=torch.float64)
                out_shape = tuple(forward_with(module, probe, weight_mask(module)).shape[1:])
                L = self.layers[name] = SynapticLayer(
                    name=name,
                    kind=_kind(module),
                    role=self._role(name),
                    in_shape=in_shape,
                    out_shape=out_shape,
                    weights=int(w.numel()),
                    nonzero_weights=int((w != 0).sum()),
                    kernel=tuple(module.kernel_size) if conv else (1,),
                    stride=tuple(module.stride) if conv else (1,),
                    groups=int(module.groups) if conv else 1,
                    num_steps=self.T,
                    once=once,
                )
            ref = self._spike_outputs.get(id(inputs[0]))
            if ref is not None and ref() is inputs[0]:
                L.spike_input = True
            F_eff, dense_per_sample = self._fanouts(name, module, in_shape)
            nz = (x != 0).reshape(steps, -1, *in_shape).sum(1).to("cpu", torch.float64)
            ops = (nz * F_eff).reshape(steps, -1).sum(1).numpy()
            in_nz = nz.reshape(steps, -1).sum(1).numpy()
            binary = _is_binary(x)
            target = L.ac if binary else L.mac
            target[:steps] += ops
            L.dense[:steps] += dense_per_sample * self._batch
            L.in_nonzero[:steps] += in_nz
            if binary:
                L.calls_binary += 1
            else:
                L.calls_analog += 1
            if L.role != "se":
                self._last_synaptic = name
            if name in self._gap_layers and self._last_population is not None:
                shape, was_binary = self._last_population
                self._count_extra(self._gap_layers[name], "gap", shape, steps, was_binary)

        return hook

    def _population_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            y = out.detach()
            steps, _ = self._steps_of(y, name)
            P = self.populations.get(name)
            if P is None:
                kind = "lif" if isinstance(module, LIF) else "relu"
                P = self.populations[name] = Population(
                    name, kind, tuple(y.shape[1:]), num_steps=steps, source=self._last_synaptic
                )
                if self._last_synaptic is not None:
                    L = self.layers[self._last_synaptic]
                    L.population = L.population or name
            P.spikes[:steps] += (y != 0).reshape(steps, -1).sum(1).to("cpu").double().numpy()
            self._spike_outputs[id(out)] = weakref.ref(out)
            self._last_synaptic = None
            self._last_population = (tuple(y.shape[1:]), _is_binary(y))

        return hook

    def _extra_hook(self, name: str, kind: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach()
            steps, _ = self._steps_of(x, name)
            self._count_extra(name, kind, tuple(x.shape[1:]), steps, _is_binary(x))

        return hook

    def _count_extra(
        self, name: str, kind: str, shape: tuple[int, ...], steps: int, binary: bool
    ) -> None:
        elements = math.prod(shape)
        E = self.extras.get(name)
        if E is None:
            E = self.extras[name] = ExtraOps(name, kind, elements, steps, binary)
        count = float(elements * steps * (self._batch or 0))
        E.adds += count  # global average pooling over H, W: one add per element
        if kind == "se_gate":
            E.muls += count  # the gate multiplies every element of the current

    def _watch_gate(self, name: str, block: SpikingDSBlock) -> None:
        """An on-chip SE gate (``--se onchip`` run): the pointwise layer's input spikes and
        the gate's integer current, counted by :mod:`nalln.energy.onchip_gates`."""
        from nalln.energy.onchip_gates import GateCounts

        conv = next(c for c, m in block.pw.named_children() if isinstance(m, nn.Conv2d))
        weight = getattr(block.pw, conv).weight.detach()

        def spikes_in(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            self._gate_input[name] = inputs[0].detach()

        def gate_out(module: OnchipSE, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            cur = inputs[0].detach()
            steps, _ = self._steps_of(cur, f"{name}.se")
            s = self._gate_input.pop(name)
            G = self.gates.get(name)
            if G is None:
                G = self.gates[name] = GateCounts(
                    name=name,
                    layer=f"{name}.pw.{conv}",
                    population=f"{name}.pw_lif",
                    in_shape=tuple(s.shape[1:]),
                    gate=module.integer_gate(),
                    num_steps=self.T,
                    pw_nonzero=(weight != 0).reshape(weight.shape[0], -1).sum(0).cpu().numpy(),
                )
            x = torch.round(cur.double() * module.scales.scale).to(torch.int64)
            G.observe(s.reshape(steps, -1, *s.shape[1:]), x.reshape(steps, -1, *x.shape[1:]))

        self._handles.append(block.pw.register_forward_pre_hook(spikes_in))
        self._handles.append(block.se.register_forward_hook(gate_out))

    def result(self) -> NetworkCounts:
        return NetworkCounts(
            network=self.network,
            num_steps=self.T,
            n=self.n,
            layers=list(self.layers.values()),
            populations=list(self.populations.values()),
            extras=list(self.extras.values()),
            gates=list(self.gates.values()),
        )


@torch.no_grad()
def count_model(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    preprocess: nn.Module | None = None,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    network: str = "snn",
    progress: bool = False,
    desc: str = "counting",
) -> NetworkCounts:
    """Run ``model`` over ``inputs`` (uint8 images with ``preprocess``, or ready tensors) and
    return its counts."""
    from tqdm.auto import tqdm

    T = int(getattr(model, "num_steps", 1))
    was_training = model.training
    model.eval()
    counter = OpCounter(model, T, network)
    try:
        starts = range(0, len(inputs), batch_size)
        for i in tqdm(starts, desc=desc, disable=not progress, unit="batch", leave=False):
            x = inputs[i : i + batch_size].to(device)
            if preprocess is not None:
                x = preprocess(x)
            with counter.batch(len(x)):
                model(x)
    finally:
        counter.close()
        model.train(was_training)
    return counter.result()


def merge_counts(parts: Sequence[NetworkCounts]) -> NetworkCounts:
    """One network's counts over several disjoint image sets (torchrun shards), as if counted
    in one pass: every count is a sum over samples, so the parts add up. The counts are
    integers held in float64 (exact below 2**53), so the sum does not depend on the order."""
    first = parts[0]
    for p in parts[1:]:
        same = [L.name for L in p.layers] == [L.name for L in first.layers]
        if not same or p.network != first.network or p.num_steps != first.num_steps:
            raise ValueError("merge_counts: the parts come from different networks")

    def total(values: list[Any]) -> Any:
        out = values[0]
        for v in values[1:]:
            out = out + v
        return out

    layers = [
        replace(
            L,
            **{
                k: total([getattr(p.layers[i], k) for p in parts])
                for k in ("ac", "mac", "dense", "in_nonzero", "calls_binary", "calls_analog")
            },
        )
        for i, L in enumerate(first.layers)
    ]
    populations = [
        replace(pop, spikes=total([p.populations[i].spikes for p in parts]))
        for i, pop in enumerate(first.populations)
    ]
    extras = [
        replace(
            e,
            adds=total([p.extras[i].adds for p in parts]),
            muls=total([p.extras[i].muls for p in parts]),
        )
        for i, e in enumerate(first.extras)
    ]
    gates = [total([p.gates[i] for p in parts]) for i in range(len(first.gates))]
    return replace(
        first,
        n=sum(p.n for p in parts),
        layers=layers,
        populations=populations,
        extras=extras,
        gates=gates,
    )
