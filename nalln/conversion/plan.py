r"""Lowering a checked NIR graph to a deployment plan: synapse(s) -> [SE gate] -> neuron stages.

This is what the Lava process graph, the netx file and the fixed-point calibration are built
from (Norse reads the NIR graph itself). Lowering is exact algebra:

* a NIR ``LIF`` with time step ``dt`` is, per step,
  :math:`v \leftarrow (1 - \frac{dt}{\tau}) v + \frac{dt}{\tau}(v_{leak} + r I)`; spike if
  :math:`v > v_{th}`, then :math:`v \leftarrow v_{reset}`. The input gain :math:`r\,dt/\tau` is
  folded into the synapse before it, leaving one decay ``dt/tau`` and one threshold per
  population (what a Lava LIF or a Loihi compartment group holds). ``v_leak`` and ``v_reset``
  must be zero; the reset rule and spikes per step (NIR's: zero, single) are the node's
  recorded semantics (:mod:`nalln.conversion.semantics`), carried on the population.
* pooling with ``stride == kernel`` followed by a conv or (after Flatten) an Affine/Linear node is
  folded into that layer's weights (netx has no pooling layer), so e.g. GAP -> fc becomes one
  dense layer over the un-pooled map with weights ``W / (h * w)`` repeated.
* a segment that ends in a synapse and the next that starts with a neuron are joined through the
  SE side-car gate between them (hybrid export).
* a graph (branches and merges; :func:`_lower_chain`): nodes are lowered in topological order
  and each node's output is a sum of terms :math:`\sum_j L_j(s_j)`, each a linear map
  :math:`L_j` (synapse, pooling, Flatten, Scale, Delay, in any of the orders above) of one
  source :math:`s_j` (the input or a population's spikes). NIR sums the edges into a node, and
  every linear node distributes over the sum: :math:`W \sum_j x_j + b = \sum_j W x_j + b`
  (the bias once, on the first term), so a population receiving several edges gets one
  synapse per term (:attr:`Stage.merged`), their currents summed, the neuron's gain applied
  to each; a bare population in a merge (a skip straight into a neuron) gets the identity
  synapse. A branch (one population read by several nodes) needs nothing: each reader's
  synapse names what it reads (``Synapse.reads``). A chain is the graph whose every term is
  its predecessor's, and lowers exactly as before (``reads`` is None throughout).
* a NIR ``Delay`` ``d`` (time) on a population's output (or the input) is, per element,
  ``round(d / dt)`` whole steps (else refused) on the synapse that reads it:
  :math:`y_t = x_{t - d}`, zero before step 0 (``Synapse.delay``); a Delay after a synapse
  would also delay its bias, and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import nir
import numpy as np

from nalln.conversion.conv1d import conv1d_synapse
from nalln.conversion.neurons import NEURON_TYPES, READOUT_TYPES, neuron_params, readout_params
from nalln.conversion.nir_io import Artefact, ChainNode, chain_of, conv_padding, node_meta
from nalln.conversion.scale import scale_inputs, scale_outputs
from nalln.errors import NallnError
from nalln.ir.plan import PLAN_INPUT, Neuron, Plan, Readout, Stage, Synapse

DT_FALLBACK = 1e-4  # snnTorch's exporter assumes this dt without writing it down (toolchain.md)


def pool_params(node, name: str, shape: tuple[int, ...]) -> tuple[int, int]:
    k = np.atleast_1d(np.asarray(node.kernel_size)).astype(int).tolist()
    s = np.atleast_1d(np.asarray(node.stride)).astype(int).tolist()
    p = np.atleast_1d(np.asarray(node.padding)).astype(int).tolist()
    k, s = (k * 2)[:2], (s * 2)[:2]
    if k != s or any(p):
        raise NallnError(
            f"pooling node {name!r} has kernel {k}, stride {s}, padding {p}; only non-overlapping "
            "pooling (stride = kernel, no padding) can be folded into the next layer"
        )
    return k[0], k[1]


def fold_pool_dense(w: np.ndarray, pooled: tuple[int, ...], full: tuple[int, ...], k, avg: bool):
    c, hp, wp = pooled
    _, h, wd = full
    w4 = w.reshape(w.shape[0], c, hp, wp)
    rep = np.repeat(np.repeat(w4, k[0], axis=2), k[1], axis=3)
    out = np.zeros((w.shape[0], c, h, wd), dtype=np.float64)
    out[:, :, : hp * k[0], : wp * k[1]] = rep
    if avg:
        out /= k[0] * k[1]
    return out.reshape(w.shape[0], -1)


def _recurrent(item: ChainNode, gain: float) -> Synapse | None:
    """The loop ``neuron -> w -> neuron`` as a dense synapse on the neuron's previous spikes;
    its current enters the neuron like the forward one, so it gets the same gain."""
    if item.recurrent is None:
        return None
    name, node = item.recurrent
    w = np.asarray(node.weight, np.float64) * gain
    bias = getattr(node, "bias", None)
    b = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, np.float64) * gain
    return Synapse("dense", w, b, item.out_shape, item.out_shape, source=name)


@dataclass(frozen=True)
class _Term:
    """One summand of the value a node outputs: what it reads (the input or a population) and
    the linear operations pending on it (a synapse, a pooling, a Flatten, a Scale, a Delay)."""

    reads: str
    src_shape: tuple[int, ...]
    syn: Synapse | None = None
    pool: tuple[str, tuple[int, int], tuple[int, ...], bool] | None = None  # name, k, full, avg
    flat_from: tuple[int, ...] | None = None
    pre_scale: tuple[str, np.ndarray, tuple[int, ...]] | None = None  # name, factors, shape
    delay: np.ndarray | None = None  # steps per element of ``src_shape``
    closed: str | None = None  # the readout (LI / Integrator) that must end the graph

    @property
    def bare(self) -> bool:
        return (
            self.syn is None
            and self.pool is None
            and self.flat_from is None
            and (self.pre_scale is None)
        )


def _identity(t: _Term, name: str) -> Synapse:
    """The identity synapse of a population (or input) summed with other currents (a skip
    connection straight into a merge): a dense eye, or a 1x1 conv with an eye per channel."""
    shape = t.src_shape
    if len(shape) == 3:
        c = shape[0]
        w = np.eye(c).reshape(c, c, 1, 1)
        return Synapse("conv", w, np.zeros(c), shape, shape, source=name)
    n = int(np.prod(shape))
    return Synapse("dense", np.eye(n), np.zeros(n), shape, shape, source=name)


def delay_steps(node: nir.Delay, name: str, dt: float, shape: tuple[int, ...]) -> np.ndarray:
    """NIR's delay (time units) as whole steps ``delay / dt`` per element."""
    d = np.broadcast_to(np.asarray(node.delay, np.float64), shape) / dt
    steps = np.rint(d)
    if np.any(np.abs(d - steps) > 1e-6 * np.maximum(1.0, np.abs(d))) or np.any(steps < 0):
        raise NallnError(
            f"Delay node {name!r}: delays {np.unique(d)[:4].tolist()} steps (delay / dt, dt = "
            f"{dt:g}) are not whole non-negative numbers of steps"
        )
    return steps.astype(np.int64)


def _lower_chain(chain: list[ChainNode], dt: float) -> list[Stage]:
    """Lower the checked graph (nodes in topological order) to stages; each node's output is a
    sum of :class:`_Term` (several in a merge), so a chain lowers exactly as it always has."""
    stages: list[Stage] = []
    opened = False  # a neuron before any synapse (second segment of a hybrid export)
    value: dict[str, list[_Term]] = {chain[0].name: [_Term(PLAN_INPUT, chain[0].out_shape)]}

    def need_no_synapse(t: _Term, name: str, what: str) -> None:
        if t.syn is not None:
            raise NallnError(
                f"node {name!r} ({what}) follows synaptic node {t.syn.source!r} with no neuron "
                "between them; nalln needs synapse -> neuron pairs"
            )

    def synapses(terms: list[_Term], name: str, kind: str) -> list[Synapse]:
        """The synapses of the terms a population (or readout) sums; a bare population in a
        merge gets an identity synapse."""
        out = []
        for t in terms:
            if t.syn is None and not (t.bare and len(terms) > 1):
                raise NallnError(
                    f"{kind} node {name!r} receives {t.reads!r} through no synapse; nalln needs "
                    "synapse -> neuron pairs"
                )
            syn = t.syn if t.syn is not None else _identity(t, f"{name}.skip.{t.reads}")
            delay = None if t.delay is None or not np.any(t.delay) else t.delay
            out.append(replace(syn, reads=t.reads, delay=delay))
        return out

    for item in chain[1:]:
        name, node, shape = item.name, item.node, item.in_shape
        terms = [t for p in item.preds for t in value[p]]
        for t in terms:
            if t.closed is not None and not isinstance(node, nir.Output | nir.Flatten):
                raise NallnError(
                    f"node {name!r} follows readout {t.closed!r}; nalln runs LI and Integrator "
                    "nodes only as the last layer before the Output"
                )
        out: list[_Term] = []
        if isinstance(node, nir.Conv1d):
            for i, t in enumerate(terms):
                need_no_synapse(t, name, "Conv1d")
                if t.pool is not None or t.flat_from is not None or t.pre_scale is not None:
                    raise NallnError(
                        f"Conv1d node {name!r} follows pooling, Flatten or Scale; nalln folds "
                        "none of them into a Conv1d"
                    )
                syn = conv1d_synapse(node, name, shape, item.out_shape)
                syn = syn if i == 0 else replace(syn, bias=0 * syn.bias)  # the bias once
                out.append(replace(t, syn=syn))
        elif isinstance(node, nir.Conv2d):
            for i, t in enumerate(terms):
                need_no_synapse(t, name, "Conv2d")
                if t.flat_from is not None:
                    raise NallnError(f"Conv2d node {name!r} follows a Flatten")
                w = np.asarray(node.weight, np.float64)
                stride = tuple(np.atleast_1d(np.asarray(node.stride)).astype(int).tolist() * 2)[:2]
                pad = conv_padding(node)
                dil = tuple(np.atleast_1d(np.asarray(node.dilation)).astype(int).tolist() * 2)[:2]
                if dil != (1, 1):
                    raise NallnError(
                        f"Conv2d node {name!r} has dilation {dil}; only 1 is supported"
                    )
                in_shape, pool = shape, t.pool
                if pool is not None:
                    pname, k, full, avg = pool
                    if full[1] % k[0] or full[2] % k[1]:
                        raise NallnError(
                            f"pooling {pname!r} before conv {name!r}: the input {list(full)} is "
                            f"not a multiple of the kernel {list(k)}, so it cannot be folded"
                        )
                    w = np.repeat(np.repeat(w, k[0], axis=2), k[1], axis=3)
                    if avg:
                        w = w / (k[0] * k[1])
                    stride = (stride[0] * k[0], stride[1] * k[1])
                    pad = (pad[0] * k[0], pad[1] * k[1])
                    in_shape, pool = full, None
                if t.pre_scale is not None:
                    w = scale_inputs(
                        w, "conv", int(np.asarray(node.groups)), *t.pre_scale[1:], t.pre_scale[0]
                    )
                b = np.zeros(w.shape[0]) if node.bias is None else np.asarray(node.bias, np.float64)
                b = b * np.ones(w.shape[0]) * (i == 0)  # the bias once, on the first summand
                syn = Synapse(
                    "conv",
                    w,
                    b,
                    in_shape,
                    item.out_shape,
                    stride,
                    pad,
                    int(np.asarray(node.groups)),
                    name,
                )
                out.append(replace(t, syn=syn, pool=None, pre_scale=None))
        elif isinstance(node, nir.AvgPool2d | nir.SumPool2d):
            for t in terms:
                need_no_synapse(t, name, type(node).__name__)
                if t.pool is not None or t.flat_from is not None:
                    raise NallnError(f"pooling node {name!r} follows another pooling or a Flatten")
                k = pool_params(node, name, shape)
                out.append(replace(t, pool=(name, k, shape, isinstance(node, nir.AvgPool2d))))
        elif isinstance(node, nir.Flatten):
            for t in terms:
                if t.syn is not None or t.closed is not None:
                    out.append(t)  # flattening a current before the output: a reshape only
                else:
                    out.append(replace(t, flat_from=t.pool[2] if t.pool is not None else shape))
        elif isinstance(node, nir.Affine | nir.Linear):
            for i, t in enumerate(terms):
                need_no_synapse(t, name, type(node).__name__)
                w = np.asarray(node.weight, np.float64)
                in_shape = t.flat_from if t.flat_from is not None else shape
                if t.pool is not None:
                    pname, k, full, avg = t.pool
                    pooled = (full[0], full[1] // k[0], full[2] // k[1])
                    w = fold_pool_dense(w, pooled, full, k, avg)
                    in_shape = full
                if t.pre_scale is not None:
                    pname, factors, scaled_shape = t.pre_scale
                    w = scale_inputs(w, "dense", 1, factors, scaled_shape, pname)
                bias = getattr(node, "bias", None)
                b = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, np.float64)
                b = b * np.ones(w.shape[0]) * (i == 0)
                syn = Synapse("dense", w, b, tuple(in_shape), item.out_shape, source=name)
                out.append(replace(t, syn=syn, pool=None, pre_scale=None, flat_from=None))
        elif isinstance(node, nir.Delay):
            steps = delay_steps(node, name, dt, shape)
            for t in terms:
                if not t.bare:
                    raise NallnError(
                        f"Delay node {name!r} follows a synapse, pooling, Flatten or Scale; "
                        "nalln delays a population's spikes or the input (put the Delay right "
                        "after a neuron or the Input)"
                    )
                out.append(replace(t, delay=steps if t.delay is None else t.delay + steps))
        elif isinstance(node, NEURON_TYPES):
            kind = type(node).__name__
            for t in terms:
                if t.pool is not None or t.flat_from is not None or t.pre_scale is not None:
                    raise NallnError(
                        f"{kind} node {name!r} follows pooling, Flatten or Scale without a synapse"
                    )
            params = neuron_params(node, name, dt)
            neuron = Neuron(
                name,
                item.out_shape,
                params.decay,
                params.v_th,
                node_meta(node).get("module"),
                params.current_decay,
                kind,
                params.reset,
                params.spikes,
                params.v_min,
            )
            if len(terms) == 1 and terms[0].syn is None and terms[0].delay is None:
                if stages or opened:
                    raise NallnError(f"{kind} node {name!r} has no synapse before it")
                opened = True
                stages.append(Stage(name, None, None, neuron))
                value[name] = [_Term(name, item.out_shape)]
                continue
            syns = synapses(terms, name, kind)
            if params.gain != 1.0:
                syns = [
                    replace(s, weight=s.weight * params.gain, bias=s.bias * params.gain)
                    for s in syns
                ]
            rec = _recurrent(item, params.gain)
            stages.append(Stage(name, syns[0], None, neuron, recurrent=rec, merged=tuple(syns[1:])))
            out = [_Term(name, item.out_shape)]
        elif isinstance(node, READOUT_TYPES):
            kind = type(node).__name__
            if any(t.syn is None or t.pre_scale is not None for t in terms):
                raise NallnError(
                    f"{kind} node {name!r} needs a synapse right before it (nalln runs "
                    f"{kind} as the readout integrating the last synapse's current)"
                )
            decay, gain = readout_params(node, name, dt)
            syns = synapses(terms, name, kind)
            if gain != 1.0:
                syns = [replace(s, weight=s.weight * gain, bias=s.bias * gain) for s in syns]
            stages.append(
                Stage(name, syns[0], None, None, Readout(name, decay, kind), merged=tuple(syns[1:]))
            )
            out = [_Term(name, item.out_shape, closed=name)]
        elif isinstance(node, nir.Scale):
            factors = np.asarray(node.scale, np.float64)
            for t in terms:
                if t.syn is not None:  # on the synapse's current
                    w, b = scale_outputs(t.syn, factors, name)
                    out.append(replace(t, syn=replace(t.syn, weight=w, bias=b)))
                elif t.pool is not None or t.pre_scale is not None or t.flat_from is not None:
                    raise NallnError(
                        f"Scale node {name!r} follows pooling, Flatten or another Scale; nalln "
                        "folds a Scale into the synapse right before or after it"
                    )
                else:  # on the next synapse's input
                    out.append(replace(t, pre_scale=(name, factors, shape)))
        elif isinstance(node, nir.Output):
            for t in terms:
                if t.pre_scale is not None:
                    raise NallnError(
                        f"Scale node {t.pre_scale[0]!r} right before the output scales spikes; "
                        "nalln folds a Scale into a synapse (put it before the last synapse)"
                    )
                if t.pool is not None:
                    raise NallnError(
                        f"pooling {t.pool[0]!r} right before the output is not supported"
                    )
                if t.delay is not None and t.syn is None:
                    raise NallnError(
                        f"a Delay right before the output {name!r} delays no synapse; nalln "
                        "delays a synapse's input (put a synapse after the Delay)"
                    )
            if len(terms) > 1 and any(t.closed is not None for t in terms):
                raise NallnError(
                    f"the output {name!r} sums a readout with other values; nalln runs a "
                    "readout (LI / Integrator) only as the one layer before the Output"
                )
            if len(terms) > 1 or terms[0].syn is not None:
                syns = synapses(terms, name, "Output")
                stages.append(Stage(syns[0].source, syns[0], None, None, merged=tuple(syns[1:])))
        value[name] = out
    if not any(s.synapse is not None for s in stages):
        raise NallnError("the graph has no synaptic layer")
    return _as_chain(stages)


def _as_chain(stages: list[Stage]) -> list[Stage]:
    """Drop ``reads`` where a synapse reads the stage right before it (a chain's every synapse),
    so a chain's plan is exactly what it was before graphs could branch."""
    out = []
    for k, st in enumerate(stages):
        prev = PLAN_INPUT if k == 0 else stages[k - 1].name
        if st.synapse is None:
            out.append(st)
            continue
        syns = [replace(s, reads=None) if s.reads == prev else s for s in st.synapses]
        out.append(replace(st, synapse=syns[0], merged=tuple(syns[1:])))
    return out


def graph_dt(graph: nir.NIRGraph, info: dict[str, Any]) -> float:
    """The graph's time step: recorded in its info, else in a neuron's metadata, else
    snnTorch's unrecorded 1e-4 (what lowering and a Delay's steps use)."""
    if "dt" in info:
        return float(info["dt"])
    for node in graph.nodes.values():
        if isinstance(node, NEURON_TYPES) and "dt" in node_meta(node):
            return float(node_meta(node)["dt"])
    return DT_FALLBACK


def lower(artefact: Artefact, num_steps: int | None = None) -> Plan:
    """The deployment plan of a checked artefact (one graph, or hybrid segments + side-car)."""
    info = artefact.info
    steps = int(num_steps or info.get("num_steps") or 0)
    if steps < 1:
        raise NallnError("the graph does not record its number of time steps; pass --steps T")
    pieces = []
    dt = DT_FALLBACK
    for i, seg in enumerate(artefact.segments):
        dt = graph_dt(seg, info)
        pieces.append(_lower_chain(chain_of(seg, f"segment {i}"), dt))
    stages = pieces[0]
    for i, nxt in enumerate(pieces[1:]):
        gate = artefact.gates[i]
        last, first = stages[-1], nxt[0]
        if last.neuron is not None or first.synapse is not None:
            raise NallnError(
                f"segment {i} must end with a synapse and segment {i + 1} start with a neuron "
                "to be joined by an SE gate"
            )
        if gate.channels != last.synapse.out_shape[0]:
            raise NallnError(
                f"SE gate {gate.name!r} has {gate.channels} channels but segment {i} ends with "
                f"{last.synapse.out_shape[0]}"
            )
        stages = [*stages[:-1], Stage(first.name, last.synapse, gate, first.neuron), *nxt[1:]]
    if stages[0].synapse is None:
        raise NallnError("the first segment starts with a neuron; it needs a synapse first")
    input_shape = tuple(stages[0].synapse.in_shape)
    return Plan(input_shape, stages, steps, dt, dict(info))
