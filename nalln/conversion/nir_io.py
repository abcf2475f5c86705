"""Reading, writing and checking NIR graphs (ours or another tool's) - all file I/O in one place.

``nir.read`` cannot type-check a graph with a grouped conv (nir 1.0.8 infers C_in from
``weight.shape[1]``), so graphs are read with ``type_check=False`` and then checked here: the node
types must be ones the back-ends support, the graph must be a directed acyclic graph from one Input
to one Output (branches and merges allowed; several edges into a node are summed, NIR's rule),
plus loops ``neuron -> Linear/Affine -> the same neuron``, and the shapes must meet. Our own
shape inference sets every node's input/output type (grouped convs get
``C_in = weight.shape[1] * groups``) before NIR's own ``check_types`` runs.

Files are untrusted, even our own (a folder from someone else looks the same): before reading,
:func:`probe` checks them in a child process with a time limit (:mod:`nir_probe`: no links into
other files, no external or virtual storage, at most ``MAX_NIR_BYTES`` declared, a trial
``nir.read``), so a file that would make libhdf5 hang or crash costs a killed child and one
error line. Then the file is read here. Measured cost: about 0.25 s per call on an idle
2-core machine, mostly the child's imports (benchmarks/bench_nir_read.py, docs/conversion.md).

A hybrid export is a folder: ``segment_<i>.nir`` files, ``se_sidecar.json`` (what the gates are,
in words and shapes) and ``se_sidecar.safetensors`` (their weights), listed in ``manifest.json``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nir
import numpy as np

from nalln.conversion import nir_probe
from nalln.conversion.conv1d import conv1d_out
from nalln.conversion.export import FORMAT, Exported
from nalln.errors import NallnError
from nalln.io import write_json
from nalln.ir.plan import GateSpec
from nalln.ir.se_mode import SEMode

SUPPORTED = (
    nir.Input,
    nir.Output,
    nir.Conv1d,
    nir.Conv2d,
    nir.Affine,
    nir.Linear,
    nir.LIF,
    nir.IF,
    nir.CubaLIF,
    nir.Threshold,
    nir.Scale,
    nir.LI,
    nir.I,
    nir.AvgPool2d,
    nir.SumPool2d,
    nir.Flatten,
    nir.Delay,
)
SUPPORTED_NAMES = ", ".join(t.__name__ for t in SUPPORTED)
MANIFEST = "manifest.json"
SIDECAR_JSON = "se_sidecar.json"
SIDECAR_TENSORS = "se_sidecar.safetensors"
GRAPH_FILE = "graph.nir"


@dataclass
class ChainNode:
    name: str
    node: nir.NIRNode
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    recurrent: tuple[str, nir.NIRNode] | None = None  # (name, Linear/Affine) feeding it back
    preds: tuple[str, ...] = ()  # the nodes whose outputs it receives (summed), in edge order


RECURRENT_NEURONS = (nir.LIF, nir.IF, nir.CubaLIF)
NEURON_NODES = (nir.LIF, nir.IF, nir.CubaLIF, nir.Threshold, nir.LI, nir.I)


def recurrent_loops(graph: nir.NIRGraph, succ: dict, pred: dict) -> dict[str, str]:
    """neuron -> the Linear/Affine node ``w`` of a loop ``neuron -> w -> neuron`` (snnTorch's
    RLeaky/RSynaptic, the NIR paper's recurrent CubaLIF): the neuron's own spikes, one step
    late, weighted by ``w``, add to its input current (NIR's one-step delay on a cycle)."""
    loops = {}
    for w, node in graph.nodes.items():
        if isinstance(node, nir.Linear | nir.Affine) and len(pred[w]) == 1 and succ[w] == pred[w]:
            n = pred[w][0]
            if isinstance(graph.nodes[n], RECURRENT_NEURONS) and n not in loops:
                loops[n] = w
    return loops


@dataclass
class Artefact:
    """A NIR graph (or hybrid segments + SE side-car) as read from disk, with our metadata."""

    segments: list[nir.NIRGraph]
    gates: list[GateSpec] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    @property
    def ours(self) -> bool:
        return bool(self.info.get("format") == FORMAT)

    @property
    def se_mode(self) -> SEMode:
        """How the SE gates were exported; ``NONE`` for graphs other tools wrote."""
        try:
            return SEMode(self.info.get("se_mode", SEMode.NONE))
        except ValueError:
            raise NallnError(f"unknown se_mode {self.info.get('se_mode')!r} in the graph") from None


# --- metadata -----------------------------------------------------------------------------------


def _plain(v: Any) -> Any:
    """HDF5 gives metadata back as bytes / numpy scalars."""
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.generic):
        return v.item()
    return v


def graph_info(graph: nir.NIRGraph) -> dict[str, Any]:
    meta = {k: _plain(v) for k, v in (graph.metadata or {}).items()}
    info = json.loads(meta.pop("nalln")) if isinstance(meta.get("nalln"), str) else {}
    return {**meta, **info}


def node_meta(node: nir.NIRNode) -> dict[str, Any]:
    return {k: _plain(v) for k, v in (getattr(node, "metadata", None) or {}).items()}


# --- checking -----------------------------------------------------------------------------------


def _pair(v: Any) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return (a[0], a[0]) if len(a) == 1 else (a[0], a[1])


def conv_padding(node: nir.Conv2d) -> tuple[int, int]:
    pad = node.padding
    if isinstance(pad, bytes):
        pad = pad.decode()
    if isinstance(pad, str):
        if pad == "valid":
            return (0, 0)
        k = node.weight.shape[2:]
        if any(s != 1 for s in _pair(node.stride)) or any(x % 2 == 0 for x in k):
            raise NallnError("Conv2d padding='same' is supported only for odd kernels, stride 1")
        return (k[0] // 2, k[1] // 2)
    return _pair(pad)


def _conv_out(node: nir.Conv2d, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    groups = int(np.asarray(node.groups))
    c_in = node.weight.shape[1] * groups
    if len(shape) != 3 or shape[0] != c_in:
        raise NallnError(
            f"shapes do not chain at node {name!r} (Conv2d): it expects [{c_in}, H, W] "
            f"(weight {list(node.weight.shape)}, groups {groups}) but receives {list(shape)}"
        )
    k, s, p, d = node.weight.shape[2:], _pair(node.stride), conv_padding(node), _pair(node.dilation)
    out = [(shape[i + 1] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(2)]
    if min(out) < 1:
        raise NallnError(f"shapes do not chain at node {name!r}: input {list(shape)} is too small")
    return (node.weight.shape[0], *out)


def _pool_out(node, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) != 3:
        raise NallnError(
            f"shapes do not chain at node {name!r}: pooling needs [C, H, W], got " f"{list(shape)}"
        )
    k, s, p = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
    out = [(shape[i + 1] + 2 * p[i] - k[i]) // s[i] + 1 for i in range(2)]
    if min(out) < 1:
        raise NallnError(
            f"shapes do not chain at node {name!r}: input {list(shape)} is smaller "
            f"than the pooling kernel {list(k)}"
        )
    return (shape[0], *out)


def _flatten_out(node: nir.Flatten, shape: tuple[int, ...]) -> tuple[int, ...]:
    n = len(shape)
    start = int(node.start_dim) % n
    end = int(node.end_dim) % n
    return (*shape[:start], int(np.prod(shape[start : end + 1])), *shape[end + 1 :])


def _neuron_shape(node, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A neuron (or Scale) keeps its input's shape; its parameters must have that shape."""
    fields = {nir.Threshold: "threshold", nir.Scale: "scale", nir.LI: "r", nir.I: "r"}
    field = fields.get(type(node), "v_threshold")
    p = np.asarray(getattr(node, field))
    if p.size != 1 and tuple(p.shape) != tuple(shape):
        raise NallnError(
            f"shapes do not chain at node {name!r} ({type(node).__name__}): its parameters have "
            f"shape {list(p.shape)} but it receives {list(shape)}"
        )
    return tuple(shape)


def _out_shape(name: str, node: nir.NIRNode, shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(node, nir.Conv1d):
        return conv1d_out(node, name, shape)
    if isinstance(node, nir.Conv2d):
        return _conv_out(node, name, shape)
    if isinstance(node, nir.AvgPool2d | nir.SumPool2d):
        return _pool_out(node, name, shape)
    if isinstance(node, nir.Flatten):
        return _flatten_out(node, shape)
    if isinstance(node, nir.Delay):
        d = np.asarray(node.delay)
        if d.size != 1 and tuple(d.shape) != tuple(shape):
            raise NallnError(
                f"shapes do not chain at node {name!r} (Delay): its delays have shape "
                f"{list(d.shape)} but it receives {list(shape)}"
            )
        return tuple(shape)
    if isinstance(node, nir.Affine | nir.Linear):
        if len(shape) != 1 or shape[0] != node.weight.shape[1]:
            raise NallnError(
                f"shapes do not chain at node {name!r} ({type(node).__name__}): it expects "
                f"[{node.weight.shape[1]}] but receives {list(shape)} (flatten first?)"
            )
        return (node.weight.shape[0],)
    if isinstance(
        node, nir.LIF | nir.IF | nir.CubaLIF | nir.Threshold | nir.Scale | nir.LI | nir.I
    ):
        return _neuron_shape(node, name, shape)
    if isinstance(node, nir.Output):
        declared = node.output_type.get("output")
        if (
            declared is not None
            and np.asarray(declared).size
            and tuple(np.asarray(declared).astype(int).tolist()) != tuple(shape)
        ):
            raise NallnError(
                f"shapes do not chain at the output {name!r}: it declares "
                f"{np.asarray(declared).tolist()} but receives {list(shape)}"
            )
        return shape
    raise AssertionError(type(node))  # pragma: no cover - filtered before


def _back_edge(succ: dict[str, list[str]]) -> tuple[str, str] | None:
    """The first edge a depth-first walk (nodes and edges in file order) finds going back to a
    node still on its path: the edge that closes a cycle."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for root in succ:
        if root in state:
            continue
        stack = [(root, iter(succ[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return node, nxt
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
    return None


def _cycle_path(succ: dict[str, list[str]], edge: tuple[str, str]) -> list[str]:
    """The nodes of the cycle an edge ``(src, dst)`` closes: a path ``dst -> ... -> src``."""
    src, dst = edge
    back: dict[str, str | None] = {dst: None}
    queue = [dst]
    while queue:
        n = queue.pop(0)
        if n == src:
            break
        for m in succ[n]:
            if m not in back:
                back[m] = n
                queue.append(m)
    path, n = [], src
    while n is not None:
        path.append(n)
        n = back.get(n)
    return path[::-1]


def _reachable(start: str, nbrs: dict[str, list[str]]) -> set[str]:
    """Every node a walk along ``nbrs`` reaches from ``start`` (``start`` included)."""
    seen, stack = {start}, [start]
    while stack:
        for m in nbrs[stack.pop()]:
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return seen


def topological_order(nodes: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Kahn's order, ties broken by file order (a chain keeps its order); the graph is acyclic."""
    indeg = {n: 0 for n in nodes}
    for _, b in edges:
        indeg[b] += 1
    pos = {n: i for i, n in enumerate(nodes)}
    ready = sorted((n for n in nodes if indeg[n] == 0), key=pos.get)
    out = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for a, b in edges:
            if a == n:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
        ready.sort(key=pos.get)
    return out


def article(word: str) -> str:
    """'an' before a vowel sound as read aloud (an IF, an LIF, a CubaLIF), else 'a'."""
    spelled = word[:2].isupper() or len(word) == 1  # an acronym: read letter by letter
    vowel = word[0] in ("AEFHILMNORSX" if spelled else "AEIOUaeiou")
    return "an" if vowel else "a"


def chain_of(graph: nir.NIRGraph, label: str = "graph") -> list[ChainNode]:
    """Check ``graph`` and return its nodes in topological order (file order among equals: a
    chain in its own order) with their shapes and predecessors; fix the node types."""
    for name, node in graph.nodes.items():
        if not isinstance(node, SUPPORTED):
            kind = type(node).__name__
            raise NallnError(
                f"{label}: node {name!r} is {article(kind)} {kind}, which nalln cannot simulate; "
                f"supported node types: {SUPPORTED_NAMES}"
            )
    succ: dict[str, list[str]] = {n: [] for n in graph.nodes}
    pred: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        if src not in graph.nodes or dst not in graph.nodes:
            raise NallnError(f"{label}: edge ({src!r}, {dst!r}) names a node that does not exist")
        succ[src].append(dst)
        pred[dst].append(src)
    loops = recurrent_loops(graph, succ, pred)
    loop_nodes = set(loops.values())
    edges = [(a, b) for a, b in graph.edges if a not in loop_nodes and b not in loop_nodes]
    nodes = [n for n in graph.nodes if n not in loop_nodes]
    succ = {n: [b for a, b in edges if a == n] for n in nodes}
    inputs = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)]
    outputs = [n for n, v in graph.nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NallnError(
            f"{label}: nalln simulates graphs with one Input and one Output node; found "
            f"{len(inputs)} input(s) and {len(outputs)} output(s)"
        )
    back = _back_edge(succ)
    if back is not None:
        cycle = _cycle_path(succ, back)
        neurons = [n for n in cycle if isinstance(graph.nodes[n], NEURON_NODES)]
        if not neurons:
            raise NallnError(
                f"{label}: edge {back!r} closes a cycle ({' -> '.join(cycle)} -> {cycle[0]}) "
                "with no neuron on it; NIR's one-step delay on a cycle is a neuron's, so every "
                "cycle must pass through one"
            )
        raise NallnError(
            f"{label}: edge {back!r} closes a cycle ({' -> '.join(cycle)} -> {cycle[0]}); nalln "
            "runs recurrence only as neuron -> Linear/Affine -> the same neuron (a longer cycle "
            "takes one Lava step per hop, not NIR's one step, so it is not supported yet)"
        )
    pred_of = {n: [a for a, b in edges if b == n] for n in nodes}
    seen, reach = _reachable(inputs[0], succ), _reachable(outputs[0], pred_of)
    off = [n for n in nodes if n not in seen or n not in reach]
    if off:
        raise NallnError(
            f"{label}: not every node lies on a path from input to output (off every path: "
            f"{off})"
        )
    order = topological_order(nodes, edges)
    in_type = graph.nodes[inputs[0]].input_type.get("input")
    if in_type is None:
        raise NallnError(f"{label}: the Input node has no shape")
    shape = tuple(int(x) for x in np.asarray(in_type).reshape(-1))
    chain = [ChainNode(inputs[0], graph.nodes[inputs[0]], shape, shape)]
    shapes = {inputs[0]: shape}
    for name in order[1:]:
        node = graph.nodes[name]
        preds = pred_of[name]
        shape = shapes[preds[0]]
        for p in preds[1:]:
            if shapes[p] != shape:
                raise NallnError(
                    f"{label}: shapes do not meet at node {name!r}, which sums its inputs: "
                    f"{preds[0]!r} gives {list(shape)} but {p!r} gives {list(shapes[p])}"
                )
        out = _out_shape(name, node, shape)
        node.input_type = {"input": np.array(shape)}
        node.output_type = {"output": np.array(out)}
        rec = None
        if name in loops:
            w_name = loops[name]
            w = graph.nodes[w_name]
            size = int(np.prod(out))
            if len(out) != 1 or tuple(np.asarray(w.weight).shape) != (size, size):
                raise NallnError(
                    f"{label}: recurrent node {w_name!r} must map the {list(out)} outputs of "
                    f"{name!r} back onto them (a [{size}, {size}] weight on a flat population); "
                    f"it has weight {list(np.asarray(w.weight).shape)}"
                )
            w.input_type = {"input": np.array(out)}
            w.output_type = {"output": np.array(out)}
            rec = (w_name, w)
        chain.append(ChainNode(name, node, shape, out, rec, tuple(preds)))
        shapes[name] = out
    try:
        graph.check_types()
    except (ValueError, NotImplementedError) as exc:
        raise NallnError(f"{label}: shapes do not chain ({exc})") from None
    graph._update_input_output_types()
    return chain


# --- files --------------------------------------------------------------------------------------


def write_graph(path: str | os.PathLike, graph: nir.NIRGraph) -> Path:
    """``nir.write`` to a temporary sibling, then rename (no half-written file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        nir.write(tmp, graph)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


READ_TIMEOUT_S = 60.0
"""Seconds the checking child may take for all files of one read (``NALLN_NIR_TIMEOUT_S``)."""
MAX_NIR_BYTES = 2 * 2**30
"""Bytes the datasets of one NIR file may declare in all (``NALLN_NIR_MAX_BYTES``); a
NeurALLNet export declares 3.6 MB at 64x64, 34 MB at 224x224."""
PROBE_SCRIPT = Path(nir_probe.__file__)


def _limit(name: str, default: float) -> float:
    """``default``, or the environment variable ``name`` if set."""
    raw = os.environ.get(name)
    try:
        value = default if raw is None else float(raw)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise NallnError(f"{name}={raw!r} is not a positive number")
    return value


def _error(msg: str) -> NallnError:
    if "does not know" in msg:
        msg += f"; supported node types: {SUPPORTED_NAMES}"
    return NallnError(msg)


def probe(paths: list[Path]) -> None:
    """Check NIR files in a time-limited child process (:mod:`nir_probe`): refuse links into
    other files, external storage, oversized arrays, and files that hang or crash libhdf5."""
    timeout = _limit("NALLN_NIR_TIMEOUT_S", READ_TIMEOUT_S)
    max_bytes = int(_limit("NALLN_NIR_MAX_BYTES", MAX_NIR_BYTES))
    cmd = [sys.executable, "-P", str(PROBE_SCRIPT), str(max_bytes), *map(str, paths)]
    timed_out = False
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        out, err, rc = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:  # the child has been killed
        out, err, rc, timed_out = exc.stdout or b"", exc.stderr or b"", None, True
    lines = out.decode("utf-8", "replace").splitlines()
    for i, p in enumerate(paths):
        line = lines[i] if i < len(lines) else ""
        if line.startswith("refused "):
            raise _error(line.removeprefix("refused "))
        if line == "ok":
            continue
        if timed_out:
            raise NallnError(
                f"reading {p} did not finish in {timeout:g} s; the file is damaged or hostile"
            )
        last = (err.decode("utf-8", "replace").strip().splitlines() or [""])[-1]
        how = f"signal {-rc}" if rc is not None and rc < 0 else f"exit status {rc}"
        raise NallnError(
            f"reading {p} stopped the NIR checking process ({how}{': ' + last if last else ''}); "
            "the file is damaged or hostile"
        )


def read_graph(path: str | os.PathLike) -> nir.NIRGraph:
    """Read and check one NIR file (any tool's); one-line errors for anything unusable."""
    return read_graphs([path])[0]


def read_graphs(paths: list[str | os.PathLike]) -> list[nir.NIRGraph]:
    """Read and check NIR files: first :func:`probe` (one child for all), then read them here."""
    files = [Path(p) for p in paths]
    for p in files:
        if not p.is_file():
            raise NallnError(f"NIR file {p} does not exist")
    probe(files)
    graphs = []
    for p in files:
        try:
            graph = nir_probe.read(str(p))
        except nir_probe.Refused as exc:  # only if the file changed since the probe
            raise _error(str(exc)) from None
        chain_of(graph, str(p))
        graphs.append(graph)
    return graphs


def write_artefact(out: str | os.PathLike, exported: Exported) -> dict[str, Path]:
    """Write a static graph as ``graph.nir`` or hybrid segments + side-car, and a manifest."""
    from safetensors.numpy import save as st_save

    from nalln.io import write_bytes

    folder = Path(out)
    files: dict[str, Path] = {}
    if len(exported.segments) == 1:
        files[GRAPH_FILE] = write_graph(folder / GRAPH_FILE, exported.segments[0])
    else:
        for i, seg in enumerate(exported.segments):
            files[f"segment_{i}.nir"] = write_graph(folder / f"segment_{i}.nir", seg)
        tensors, entries = {}, []
        for g in exported.gates:
            for key in ("w1", "b1", "w2", "b2"):
                tensors[f"{g.name}/{key}"] = np.ascontiguousarray(getattr(g, key))
            entries.append(
                {
                    "name": g.name,
                    "after_segment": g.after_segment,
                    "channels": g.channels,
                    "hidden": int(g.w1.shape[0]),
                    "current_scale": g.current_scale,
                }
            )
        sidecar = {
            "format": "nalln-se-sidecar/1",
            "operation": (
                "per time step, on the current x [C,H,W] leaving segment `after_segment`: "
                "y = x * sigmoid(w2 @ relu(w1 @ mean_hw(x) + b1) + b2); y enters segment "
                "`after_segment + 1` (whose first node is the LIF that x fed in the torch model); "
                "where `current_scale` is not null, y = round(y * current_scale) / current_scale"
            ),
            "tensors": SIDECAR_TENSORS,
            "gates": entries,
        }
        files[SIDECAR_JSON] = write_json(folder / SIDECAR_JSON, sidecar)
        files[SIDECAR_TENSORS] = write_bytes(folder / SIDECAR_TENSORS, st_save(tensors))
    manifest = {
        "format": FORMAT,
        "se_mode": exported.se_mode,
        "segments": [
            GRAPH_FILE if len(exported.segments) == 1 else f"segment_{i}.nir"
            for i in range(len(exported.segments))
        ],
        "sidecar": SIDECAR_JSON if exported.gates else None,
        "info": exported.meta,
    }
    files[MANIFEST] = write_json(folder / MANIFEST, manifest)
    return files


def _current_scale(value: object) -> float | None:
    """A side-car gate's ``current_scale``: null, or a finite positive number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"current_scale must be a number or null, got {value!r:.40}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"current_scale must be finite and positive, got {value!r}")
    return float(value)


def read_artefact(path: str | os.PathLike) -> Artefact:
    """A ``.nir`` file or a folder written by :func:`write_artefact`."""
    p = Path(path)
    if p.is_file():
        graph = read_graph(p)
        return Artefact([graph], [], graph_info(graph), p)
    manifest_path = p / MANIFEST
    if not manifest_path.is_file():
        if (p / GRAPH_FILE).is_file():
            return read_artefact(p / GRAPH_FILE)
        raise NallnError(f"{p} is neither a NIR file nor a folder written by `nalln convert`")
    try:
        manifest = json.loads(manifest_path.read_text())
        seg_files = [p / s for s in manifest["segments"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise NallnError(f"{manifest_path} is not a nalln conversion manifest ({exc})") from None
    segments = read_graphs(seg_files)
    gates: list[GateSpec] = []
    if manifest.get("sidecar"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            spec = json.loads((p / manifest["sidecar"]).read_text())
            tensors = load_file(p / spec["tensors"])
            for e in spec["gates"]:
                gates.append(
                    GateSpec(
                        e["name"],
                        int(e["after_segment"]),
                        *(tensors[f"{e['name']}/{k}"] for k in ("w1", "b1", "w2", "b2")),
                        _current_scale(e.get("current_scale")),
                    )
                )
        except (OSError, ValueError, KeyError, SafetensorError) as exc:
            raise NallnError(f"the SE side-car in {p} is unreadable ({exc})") from None
        if len(gates) != len(segments) - 1:
            raise NallnError(
                f"{p}: {len(segments)} segments need {len(segments) - 1} SE gates between them; "
                f"the side-car has {len(gates)}"
            )
    info = {**graph_info(segments[0]), **manifest.get("info", {})}
    return Artefact(segments, gates, info, p)
