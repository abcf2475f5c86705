r"""The portable form of a NIR export: what stock ``nir.read``, snnTorch and Norse read right.

nalln's default export (:mod:`export`) is exact and compact, but three stock readers misread it
(nir 1.0.8, snnTorch 1.0.0 ``import_from_nir``, Norse 1.1.0 ``from_nir``; reproductions in
docs/conversion.md, "Other tools"). :func:`portable_graph` rewrites a checked chain into an
equivalent graph that avoids every construct they get wrong. Each rewrite is exact algebra:

* **Grouped (depthwise) Conv2d -> dense Conv2d.** nir infers a conv's input channels from
  ``weight.shape[1]`` (ignoring ``groups``) and both importers build ``in_channels`` the same
  way. A conv with ``g`` groups and weight ``W`` [C_out, C_in/g, kh, kw] equals the ``groups=1``
  conv with the block-diagonal weight ``W'`` [C_out, C_in, kh, kw]:
  :math:`W'[o, i] = W[o, i - jC_in/g]` if ``o`` and ``i`` lie in the same group ``j``, else 0.
  Cost: ``g`` times the weights of that layer in memory (a depthwise 3x3 conv over C channels
  grows from 9C to 9C^2 values) and in the multiply-adds of a simulator that computes the zeros
  (both importers do); on disk almost nothing (``nir.write`` gzips the zeros). The zeros add
  nothing, so the sums are the same up to summation order.
* **Pooling -> folded into the dense layer after it.** Norse drops ``AvgPool2d`` silently. A
  non-overlapping pool (kernel = stride = k, no padding) followed by ``Flatten`` and
  ``Affine``/``Linear`` with weight ``W`` [out, C h' w'] equals ``Flatten`` + the dense layer
  over the un-pooled map with ``W`` repeated over each k x k window, divided by ``k_h k_w`` for
  AvgPool2d (the same fold the Lava plan makes). Cost: the dense layer grows by ``k_h k_w``
  (global pooling over h x w: ``h w`` times).
* **Flatten with negative dims.** NIR's dims exclude the batch; both importers hand
  ``start_dim``/``end_dim`` to ``torch.nn.Flatten``, whose dims include it, so
  ``Flatten(start_dim=0)`` flattens the batch into the features. Counted from the end, a dim
  names the same axis with or without the batch: on an ``n``-dim input, ``start_dim = s`` is
  written ``s - n`` and ``end_dim = e`` is written ``e - n``. No cost.
* **LIF: r folded into the weights, dt for snnTorch.** NIR's LIF is
  :math:`v \leftarrow v + \frac{dt}{\tau}(v_{leak} - v + r I)`. Norse ignores ``r``;
  snnTorch assumes ``dt = 10^{-4}`` s (and cannot be told otherwise). The portable node keeps
  the decay ``dt/tau`` and sets ``tau' = (tau/dt) dt'`` with ``dt' = 10^{-4}``, ``r' = 1``, and
  multiplies the weights and bias of the synapse before it by ``r`` (nalln: ``r = tau/dt = 2``,
  a power of two, so the fold is exact in floating point). Norse must be told ``dt=1e-4``
  (``from_nir(graph, dt=1e-4)``); snnTorch then sees ``r' dt'/tau' = 1/2 != 1`` and divides the
  threshold by it, which is the same neuron scaled by 2 (exact). No cost.
* ``Conv2d`` biases are written even where zero (both importers require one); padding is
  written as two integers.

The result is checked by NIR's own type inference (``type_check=True``). The input graph is
not modified.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nir
import numpy as np

from nalln.conversion.export import Exported
from nalln.conversion.nir_io import ChainNode, chain_of, conv_padding, graph_info, node_meta
from nalln.conversion.plan import DT_FALLBACK, fold_pool_dense, pool_params
from nalln.errors import NallnError

PORTABLE_DT = 1e-4
"""Seconds per step in the portable form: the dt snnTorch 1.0's importer assumes."""
FORM = "nalln-nir-portable/1"


@dataclass(frozen=True)
class PortableCost:
    """What the portable form costs in stored values, compared with the exact export."""

    exact_values: int
    portable_values: int
    exact_weights: int
    portable_weights: int
    dense_convs: tuple[str, ...]
    folded_pools: tuple[str, ...]

    def __post_init__(self) -> None:
        counts = (
            self.exact_values,
            self.portable_values,
            self.exact_weights,
            self.portable_weights,
        )
        if min(counts) < 0:
            raise ValueError("value counts must be non-negative")

    @property
    def ratio(self) -> float:
        return self.portable_values / self.exact_values if self.exact_values else 1.0


def stored_values(graph: nir.NIRGraph, *, neurons: bool = True) -> int:
    """Weights and biases (and, with ``neurons``, LIF parameters) of a graph: the numbers a file
    stores and an importer holds in memory."""
    total = 0
    for node in graph.nodes.values():
        if isinstance(node, nir.Conv2d | nir.Affine | nir.Linear):
            total += int(np.asarray(node.weight).size)
            if getattr(node, "bias", None) is not None:
                total += int(np.asarray(node.bias).size)
        elif isinstance(node, nir.LIF) and neurons:
            total += sum(
                int(np.asarray(getattr(node, k)).size)
                for k in ("tau", "r", "v_leak", "v_threshold", "v_reset")
            )
    return total


def dense_conv_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    """The ``groups=1`` weight [C_out, C_in, kh, kw] of a grouped conv (block diagonal)."""
    w = np.asarray(weight)
    c_out, c_in_g = w.shape[:2]
    if groups < 1 or c_out % groups:
        raise NallnError(f"a conv with {c_out} output channels cannot have {groups} groups")
    o_g = c_out // groups
    dense = np.zeros((c_out, c_in_g * groups, *w.shape[2:]), dtype=w.dtype)
    for j in range(groups):
        dense[j * o_g : (j + 1) * o_g, j * c_in_g : (j + 1) * c_in_g] = w[j * o_g : (j + 1) * o_g]
    return dense


def _steps(tau: np.ndarray, dt: float, name: str) -> np.ndarray:
    """``tau / dt`` in steps, snapped to an integer where it is one (keeps ``dt/tau`` exact)."""
    steps = np.asarray(tau, np.float64) / dt
    snapped = np.round(steps)
    close = np.abs(steps - snapped) <= 1e-9 * np.abs(steps)
    steps = np.where(close, snapped, steps)
    if np.any(steps < 1):
        raise NallnError(
            f"LIF node {name!r}: tau/dt = {float(steps.min()):.3g} < 1 step; record the right dt "
            "in the node metadata"
        )
    return steps


def _uniform(values: Any, what: str, name: str) -> float:
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size and not np.all(v == v[0]):
        raise NallnError(
            f"LIF node {name!r} has non-uniform {what}; snnTorch's importer takes one {what} "
            "per layer, so the portable form needs it uniform"
        )
    return float(v[0])


def _lif(item: ChainNode, graph_dt: float, dt: float) -> tuple[nir.LIF, float]:
    """The portable LIF node and the gain ``r`` to fold into the synapse before it."""
    node, name = item.node, item.name
    meta = node_meta(node)
    if str(meta.get("reset", "zero")) not in ("zero", "reset_to_zero", "to_zero"):
        raise NallnError(
            f"LIF node {name!r} resets by {meta['reset']!r}; snnTorch's and Norse's importers "
            "reset to zero"
        )
    if np.any(np.asarray(node.v_leak) != 0) or np.any(np.asarray(node.v_reset) != 0):
        raise NallnError(
            f"LIF node {name!r} has v_leak or v_reset != 0; the importers support neither"
        )
    r = _uniform(node.r, "r", name)
    _uniform(node.v_threshold, "threshold", name)
    node_dt = float(meta.get("dt", graph_dt))
    shape = item.out_shape
    steps = _steps(node.tau, node_dt, name) * np.ones(shape)
    ones = np.ones(shape, dtype=np.float64)
    new_meta = {**meta, "dt": dt, "reset": "zero", "r_folded_into_weights": r}
    lif = nir.LIF(
        tau=steps * dt,
        r=ones,
        v_leak=ones * 0.0,
        v_threshold=ones * np.asarray(node.v_threshold, np.float64),
        v_reset=ones * 0.0,
        metadata=new_meta,
    )
    return lif, r


def _flatten(item: ChainNode, pool: ChainNode | None) -> nir.Flatten:
    """Flatten with dims counted from the end (same axes with or without a batch axis); after a
    folded pool it flattens the un-pooled map, which must then be flattened whole."""
    node, rank = item.node, len(item.in_shape)
    start, end = int(node.start_dim) % rank, int(node.end_dim) % rank
    shape = item.in_shape
    if pool is not None:
        if (start, end) != (0, rank - 1):
            raise NallnError(
                f"Flatten node {item.name!r} after pooling {pool.name!r} flattens dims "
                f"{start}..{end} of {rank}; only a whole-map Flatten can take the folded pooling"
            )
        shape = pool.in_shape
    n = len(shape)
    start, end = (0, n - 1) if pool is not None else (start, end)
    return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=start - n, end_dim=end - n)


def _scaled(w: np.ndarray, factor: float) -> np.ndarray:
    return w if factor == 1.0 else (np.asarray(w, np.float64) * factor).astype(np.asarray(w).dtype)


def portable_graph(graph: nir.NIRGraph, *, dt: float = PORTABLE_DT) -> nir.NIRGraph:
    """The equivalent graph that stock nir, snnTorch and Norse read right (module docstring).

    ``graph`` is one checked chain (a nalln export with static or no SE, or another tool's
    chain of the node types nalln supports); it is left unchanged."""
    src = copy.deepcopy(graph)
    chain = chain_of(src, "portable form")
    fed = [p for c in chain for p in c.preds]
    odd = [c.name for c in chain if len(c.preds) > 1 or fed.count(c.name) > 1]
    odd += [c.name for c in chain if isinstance(c.node, nir.Delay)]
    if odd:
        raise NallnError(
            f"the portable form rewrites chains; node {odd[0]!r} branches, merges or delays "
            "(drop --portable: the exact graph holds it)"
        )
    info = graph_info(src)
    graph_dt = float(info.get("dt", DT_FALLBACK))
    order = [c.name for c in chain]
    items = {c.name: c for c in chain}

    # LIF gains to fold, keyed by the synapse before each LIF
    gains: dict[str, float] = {}
    lifs: dict[str, nir.LIF] = {}
    for i, c in enumerate(chain):
        if not isinstance(c.node, nir.LIF):
            continue
        lif, r = _lif(c, graph_dt, dt)
        lifs[c.name] = lif
        prev = chain[i - 1]
        if not isinstance(prev.node, nir.Conv2d | nir.Affine | nir.Linear):
            raise NallnError(
                f"LIF node {c.name!r} follows {prev.name!r} ({type(prev.node).__name__}); the "
                "portable form folds r into a Conv2d/Affine/Linear right before each LIF"
            )
        gains[prev.name] = r

    nodes: dict[str, nir.NIRNode] = {}
    pool: tuple[ChainNode, tuple[int, int]] | None = None
    for i, name in enumerate(order):
        c = items[name]
        node = c.node
        g = gains.get(name, 1.0)
        if isinstance(node, nir.Input):
            nodes[name] = nir.Input(input_type={"input": np.array(c.out_shape)})
        elif isinstance(node, nir.Output):
            nodes[name] = nir.Output(output_type={"output": np.array(c.in_shape)})
        elif isinstance(node, nir.LIF):
            nodes[name] = lifs[name]
        elif isinstance(node, nir.Conv2d):
            groups = int(np.asarray(node.groups))
            w = np.asarray(node.weight)
            if groups != 1:
                w = dense_conv_weight(w, groups)
            bias = np.zeros(w.shape[0], w.dtype) if node.bias is None else np.asarray(node.bias)
            stride = tuple(np.atleast_1d(np.asarray(node.stride)).astype(int).tolist() * 2)[:2]
            dil = tuple(np.atleast_1d(np.asarray(node.dilation)).astype(int).tolist() * 2)[:2]
            nodes[name] = nir.Conv2d(
                input_shape=tuple(c.in_shape[1:]),
                weight=_scaled(w, g),
                stride=stride,
                padding=conv_padding(node),
                dilation=dil,
                groups=1,
                bias=_scaled(bias * np.ones(w.shape[0], bias.dtype), g),
                metadata=dict(node.metadata or {}),
            )
        elif isinstance(node, nir.AvgPool2d | nir.SumPool2d):
            nxt = [items[n] for n in order[i + 1 : i + 3]]
            if (
                len(nxt) < 2
                or not isinstance(nxt[0].node, nir.Flatten)
                or not isinstance(nxt[1].node, nir.Affine | nir.Linear)
            ):
                raise NallnError(
                    f"pooling node {name!r}: the portable form folds pooling into a dense layer "
                    "(pool -> Flatten -> Affine/Linear); Norse's importer drops AvgPool2d"
                )
            pool = (c, pool_params(node, name, c.in_shape))
        elif isinstance(node, nir.Flatten):
            nodes[name] = _flatten(c, pool[0] if pool is not None else None)
        elif isinstance(node, nir.Affine | nir.Linear):
            w = np.asarray(node.weight)
            if pool is not None:
                pc, k = pool
                full = pc.in_shape
                pooled = pc.out_shape
                w = fold_pool_dense(
                    w.astype(np.float64), pooled, full, k, isinstance(pc.node, nir.AvgPool2d)
                ).astype(np.asarray(node.weight).dtype)
                pool = None
            if isinstance(node, nir.Affine):
                nodes[name] = nir.Affine(
                    weight=_scaled(w, g),
                    bias=_scaled(np.asarray(node.bias), g),
                    metadata=dict(node.metadata or {}),
                )
            else:
                nodes[name] = nir.Linear(weight=_scaled(w, g), metadata=dict(node.metadata or {}))
        else:  # pragma: no cover - chain_of admits only the types above
            raise AssertionError(type(node))

    names = list(nodes)
    edges = list(itertools.pairwise(names))
    meta = {k: v for k, v in (graph.metadata or {}).items()}
    if isinstance(meta.get("nalln"), str | bytes):
        details = json.loads(meta["nalln"])
        details["portable"] = FORM
        meta["nalln"] = json.dumps(details, sort_keys=True)
    meta.update({"dt": dt, "portable": FORM})
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=True)
    except ValueError as exc:  # pragma: no cover - a bug in the rewrite, not the user's input
        raise NallnError(f"the portable graph fails NIR's type check ({exc})") from None


def cost(exact: nir.NIRGraph, portable: nir.NIRGraph) -> PortableCost:
    """Stored values before and after, and which nodes were rewritten."""
    return PortableCost(
        stored_values(exact),
        stored_values(portable),
        stored_values(exact, neurons=False),
        stored_values(portable, neurons=False),
        tuple(
            n
            for n, v in exact.nodes.items()
            if isinstance(v, nir.Conv2d) and int(np.asarray(v.groups)) != 1
        ),
        tuple(n for n, v in exact.nodes.items() if isinstance(v, nir.AvgPool2d | nir.SumPool2d)),
    )


# --- convert --portable ---------------------------------------------------------------------------


def check_portable_request(to: str, se: str) -> None:
    """Refuse option combinations the portable form cannot honour, before any work is done."""
    if to != "nir":
        raise NallnError(
            f"--portable applies to --to nir (a graph for other tools); --to {to} builds its own "
            "network from the exact graph, drop --portable"
        )
    if se != "static":
        raise NallnError(
            "--portable writes one graph that other tools run whole; the hybrid SE side-car "
            "(--se hybrid) is nalln's own, use --se static (the default with --portable)"
        )


def portable_export(exported: Exported) -> Exported:
    """The portable form of a one-graph export; its ``meta['portable']`` states the cost."""
    if len(exported.segments) != 1:
        raise NallnError(
            "--portable needs one NIR graph; this export has "
            f"{len(exported.segments)} segments joined by SE side-car gates (use --se static)"
        )
    exact = exported.segments[0]
    graph = portable_graph(exact)
    c = cost(exact, graph)
    info = {
        "form": FORM,
        "dt": PORTABLE_DT,
        "values_exact": c.exact_values,
        "values_portable": c.portable_values,
        "size_ratio": round(c.ratio, 3),
        "weights_exact": c.exact_weights,
        "weights_portable": c.portable_weights,
        "dense_convs": list(c.dense_convs),
        "folded_pools": list(c.folded_pools),
    }
    return Exported([graph], [], exported.se_mode, {**exported.meta, "portable": info})


LOAD_WITH = {
    "nir": "nir.read(path)",
    "snntorch": "snntorch.import_nir.import_from_nir(nir.read(path)); reset state between "
    "samples with snntorch.utils.reset(net)",
    "norse": f"norse.torch.from_nir(nir.read(path), dt={PORTABLE_DT:g})",
}


def portable_summary(exported: Exported, path: Path) -> dict[str, Any]:
    """What ``convert.json`` says about a portable graph, after reading it with stock nir."""
    try:
        nir.read(path)  # stock reader, default type checks
    except (ValueError, KeyError, TypeError) as exc:  # pragma: no cover - a bug in the rewrite
        raise NallnError(f"stock nir.read rejects the portable graph {path} ({exc})") from None
    return {
        **exported.meta["portable"],
        "stock_nir_read": "passes (nir 1.0.8, type_check=True)",
        "load_with": LOAD_WITH,
    }
