r"""Lowering a checked NIR chain to a deployment plan: synapse -> [SE gate] -> neuron stages.

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
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import nir
import numpy as np

from nalln.conversion.conv1d import conv1d_synapse
from nalln.conversion.neurons import NEURON_TYPES, READOUT_TYPES, neuron_params, readout_params
from nalln.conversion.nir_io import Artefact, ChainNode, chain_of, conv_padding, node_meta
from nalln.conversion.scale import scale_inputs, scale_outputs
from nalln.errors import NallnError
from nalln.ir.plan import Neuron, Plan, Readout, Stage, Synapse

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


def _lower_chain(chain: list[ChainNode], dt: float) -> list[Stage]:
    stages: list[Stage] = []
    syn: Synapse | None = None
    pool: tuple[str, tuple[int, int], tuple[int, ...], bool] | None = None  # name, k, full, avg
    flat_from: tuple[int, ...] | None = None
    opened = False  # a neuron before any synapse (second segment of a hybrid export)
    pre_scale: tuple[str, np.ndarray, tuple[int, ...]] | None = None  # name, factors, shape

    def need_no_synapse(name: str, what: str) -> None:
        if syn is not None:
            raise NallnError(
                f"node {name!r} ({what}) follows synaptic node {syn.source!r} with no neuron "
                "between them; nalln needs synapse -> neuron pairs"
            )

    closed: str | None = None  # the readout (LI / Integrator) that must end the chain
    for item in chain[1:]:
        name, node, shape = item.name, item.node, item.in_shape
        if closed is not None and not isinstance(node, nir.Output | nir.Flatten):
            raise NallnError(
                f"node {name!r} follows readout {closed!r}; nalln runs LI and Integrator nodes "
                "only as the last layer before the Output"
            )
        if isinstance(node, nir.Conv1d):
            need_no_synapse(name, "Conv1d")
            if pool is not None or flat_from is not None or pre_scale is not None:
                raise NallnError(
                    f"Conv1d node {name!r} follows pooling, Flatten or Scale; nalln folds none "
                    "of them into a Conv1d"
                )
            syn = conv1d_synapse(node, name, shape, item.out_shape)
        elif isinstance(node, nir.Conv2d):
            need_no_synapse(name, "Conv2d")
            if flat_from is not None:
                raise NallnError(f"Conv2d node {name!r} follows a Flatten")
            w = np.asarray(node.weight, np.float64)
            stride = tuple(np.atleast_1d(np.asarray(node.stride)).astype(int).tolist() * 2)[:2]
            pad = conv_padding(node)
            dil = tuple(np.atleast_1d(np.asarray(node.dilation)).astype(int).tolist() * 2)[:2]
            if dil != (1, 1):
                raise NallnError(f"Conv2d node {name!r} has dilation {dil}; only 1 is supported")
            in_shape = shape
            if pool is not None:
                pname, k, full, avg = pool
                if full[1] % k[0] or full[2] % k[1]:
                    raise NallnError(
                        f"pooling {pname!r} before conv {name!r}: the input {list(full)} is not "
                        f"a multiple of the kernel {list(k)}, so it cannot be folded"
                    )
                w = np.repeat(np.repeat(w, k[0], axis=2), k[1], axis=3)
                if avg:
                    w = w / (k[0] * k[1])
                stride = (stride[0] * k[0], stride[1] * k[1])
                pad = (pad[0] * k[0], pad[1] * k[1])
                in_shape, pool = full, None
            if pre_scale is not None:
                if pool is not None:
                    raise NallnError(f"Scale {pre_scale[0]!r} before pooling is not supported")
                w = scale_inputs(
                    w, "conv", int(np.asarray(node.groups)), *pre_scale[1:], pre_scale[0]
                )
                pre_scale = None
            b = np.zeros(w.shape[0]) if node.bias is None else np.asarray(node.bias, np.float64)
            syn = Synapse(
                "conv",
                w,
                b * np.ones(w.shape[0]),
                in_shape,
                item.out_shape,
                stride,
                pad,
                int(np.asarray(node.groups)),
                name,
            )
        elif isinstance(node, nir.AvgPool2d | nir.SumPool2d):
            need_no_synapse(name, type(node).__name__)
            if pool is not None or flat_from is not None:
                raise NallnError(f"pooling node {name!r} follows another pooling or a Flatten")
            k = pool_params(node, name, shape)
            pool = (name, k, shape, isinstance(node, nir.AvgPool2d))
        elif isinstance(node, nir.Flatten):
            if syn is not None or closed is not None:
                continue  # flattening a current before the output: a reshape only
            flat_from = pool[2] if pool is not None else shape
        elif isinstance(node, nir.Affine | nir.Linear):
            need_no_synapse(name, type(node).__name__)
            w = np.asarray(node.weight, np.float64)
            in_shape = flat_from if flat_from is not None else shape
            if pool is not None:
                pname, k, full, avg = pool
                pooled = (full[0], full[1] // k[0], full[2] // k[1])
                w = fold_pool_dense(w, pooled, full, k, avg)
                in_shape, pool = full, None
            if pre_scale is not None:
                pname, factors, scaled_shape = pre_scale
                if pool is not None:
                    raise NallnError(f"Scale {pname!r} before pooling is not supported")
                w = scale_inputs(w, "dense", 1, factors, scaled_shape, pname)
                pre_scale = None
            bias = getattr(node, "bias", None)
            b = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, np.float64)
            syn = Synapse(
                "dense", w, b * np.ones(w.shape[0]), tuple(in_shape), item.out_shape, source=name
            )
            flat_from = None
        elif isinstance(node, NEURON_TYPES):
            kind = type(node).__name__
            if pool is not None or flat_from is not None or pre_scale is not None:
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
            if syn is None:
                if stages or opened:
                    raise NallnError(f"{kind} node {name!r} has no synapse before it")
                opened = True
                stages.append(Stage(name, None, None, neuron))
                continue
            if params.gain != 1.0:
                syn = replace(syn, weight=syn.weight * params.gain, bias=syn.bias * params.gain)
            stages.append(Stage(name, syn, None, neuron, recurrent=_recurrent(item, params.gain)))
            syn = None
        elif isinstance(node, READOUT_TYPES):
            kind = type(node).__name__
            if syn is None or pre_scale is not None:
                raise NallnError(
                    f"{kind} node {name!r} needs a synapse right before it (nalln runs "
                    f"{kind} as the readout integrating the last synapse's current)"
                )
            decay, gain = readout_params(node, name, dt)
            if gain != 1.0:
                syn = replace(syn, weight=syn.weight * gain, bias=syn.bias * gain)
            stages.append(Stage(name, syn, None, None, Readout(name, decay, kind)))
            syn, closed = None, name
        elif isinstance(node, nir.Scale):
            factors = np.asarray(node.scale, np.float64)
            if syn is not None:  # on the synapse's current
                w, b = scale_outputs(syn, factors, name)
                syn = replace(syn, weight=w, bias=b)
            elif pool is not None or pre_scale is not None or flat_from is not None:
                raise NallnError(
                    f"Scale node {name!r} follows pooling, Flatten or another Scale; nalln folds "
                    "a Scale into the synapse right before or after it"
                )
            else:  # on the next synapse's input
                pre_scale = (name, factors, shape)
        elif isinstance(node, nir.Output):
            if pre_scale is not None:
                raise NallnError(
                    f"Scale node {pre_scale[0]!r} right before the output scales spikes; nalln "
                    "folds a Scale into a synapse (put it before the last synapse)"
                )
            if pool is not None:
                raise NallnError(f"pooling {pool[0]!r} right before the output is not supported")
            if syn is not None:
                stages.append(Stage(syn.source, syn, None, None))
    if not any(s.synapse is not None for s in stages):
        raise NallnError("the graph has no synaptic layer")
    return stages


def _graph_dt(graph: nir.NIRGraph, info: dict[str, Any]) -> float:
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
        dt = _graph_dt(seg, info)
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
