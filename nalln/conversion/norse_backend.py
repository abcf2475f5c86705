"""Norse back-end: NIR graph -> Norse modules through Norse's own importer, with our node map.

``norse.torch.from_nir`` (Norse 1.1.0) is ``nirtorch.load(graph, norse_node_map)``; it has no
hook for a custom map, so we call the same loader with a map of ours that delegates every node
Norse imports correctly to Norse's own per-node importer and fixes the rest (toolchain.md):

* LIF: Norse's ``LIFBoxCell`` from Norse's importer, wrapped so its input is multiplied by the
  node's ``r`` (Norse ignores ``r``), built with the graph's ``dt`` (Norse assumes 1 ms) and the
  node's reset rule (:mod:`nalln.conversion.semantics`; Norse's importer always resets to a
  value): ``reset_value``, Norse's ``reset_subtract``, or ``v - z*th/beta`` for snnTorch's
  undecayed subtraction.
* Conv2d: ``in_channels = weight.shape[1] * groups`` (Norse takes ``weight.shape[1]``, which
  breaks depthwise convs). Conv1d: ``torch.nn.Conv1d`` (Norse has none; nirtorch's default map
  swaps the channel counts).
* AvgPool2d / SumPool2d: real pooling modules (Norse drops AvgPool2d silently).
* Flatten: NIR dims exclude the batch dimension; torch's include it (Norse flattens the batch).
* IF: Norse's ``IAFCell`` (``v <- v + I``), input times ``r`` (Norse ignores it), ``v_reset``;
  with a subtracting reset, several spikes per step or a membrane floor (Sinabs), our
  :class:`IFCell` (Norse's ``IAFCell`` has none of them).
* CubaLIF: Norse's own importer (it applies ``w_in`` and ``r``) with the graph's ``dt`` and the
  node's reset rule. Several spikes per step or a membrane floor on a LIF or CubaLIF: refused
  by name (Norse's cells send one spike and have no floor).
* Threshold and Scale: small modules of ours (Norse imports neither).
* Linear: ``nn.Linear(in, out)`` from the weight's shape (Norse swaps the two).
* Recurrence (neuron -> Linear/Affine -> the same neuron): nirtorch's executor feeds the loop
  the previous step's output (nothing at step 0), NIR's one-step delay.
* LI: Norse's ``LIBoxCell`` with the graph's ``dt``, input times ``r``; Integrator (I): ours.

Hybrid exports run segment by segment each time step, with the SE side-car gate in between.
"""

from __future__ import annotations

import logging
import warnings

import nir
import numpy as np
import torch
from torch import nn

from nalln.conversion.conv1d import conv1d_padding
from nalln.conversion.nir_io import Artefact, chain_of, conv_padding, node_meta, recurrent_loops
from nalln.conversion.plan import DT_FALLBACK, delay_steps, graph_dt
from nalln.conversion.semantics import node_floor, node_semantics
from nalln.errors import NallnError
from nalln.ir.drive import Drive
from nalln.ir.reference import Trace, apply_gate, delayed
from nalln.ir.semantics import ResetRule, SpikeMode


def _require_norse():
    try:
        import nirtorch
        import norse.torch.functional.reset as reset
        from norse.torch.utils.import_nir import _import_norse_module
    except ImportError as exc:
        raise NallnError(
            f"the Norse back-end needs norse 1.1.0 and nirtorch 2.6 ({exc}); install them with "
            "`make setup`"
        ) from None
    return nirtorch, reset, _import_norse_module


class GainedCell(nn.Module):
    """A cell with the NIR input gain ``r`` applied to its input (Norse ignores ``r``). As such
    it is a non-spiking cell (LI, Integrator), not recorded: its output is a membrane."""

    def __init__(self, cell: nn.Module, r: torch.Tensor) -> None:
        super().__init__()
        self.cell = cell
        self.register_buffer("r", r)

    def forward(self, x: torch.Tensor, state=None):
        return self.cell(self.r * x, state)


class ScaledLIF(GainedCell):
    """A spiking population nalln records: Norse's LIF/IF/CubaLIF cell (or our Threshold) with
    the NIR input gain ``r`` applied to its input where Norse ignores it (LIF, IF). ``counts``:
    it sends spike counts (several per step), recorded as they are."""

    counts = False


class UndecayedSubtract:
    """A Norse ``reset_method``: ``v - z * th / beta``, so that the next step's decay leaves
    ``beta*v + I - z*th`` (snnTorch's ``reset_mechanism="subtract"``)."""

    def __init__(self, beta: torch.Tensor) -> None:
        self.beta = beta

    def __call__(self, z, v, v_reset, th):
        return v - z * th / self.beta


class IFCell(nn.Module):
    """NIR IF with what Norse's ``IAFCell`` lacks: ``v <- v + I``; ``z = [v > th]``, or
    ``floor(v / th)`` spikes where ``v > 0`` (``multi``, Sinabs's MultiSpike); then ``v <- 0``
    where it spiked (``zero``) or ``v <- v - z*th`` (subtracting); then ``v <- max(v, v_min)``
    if a floor is given (Sinabs's ``min_v_mem``)."""

    def __init__(
        self,
        v_th: torch.Tensor,
        reset: ResetRule,
        spikes: SpikeMode,
        v_min: float | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("v_th", v_th)
        self.reset, self.multi, self.v_min = reset, spikes is SpikeMode.MULTI, v_min

    def forward(self, x: torch.Tensor, state=None):
        v = x if state is None else state + x
        if self.multi:
            z = torch.where(v > 0, torch.div(v, self.v_th, rounding_mode="floor"), 0.0)
        else:
            z = (v > self.v_th).to(v.dtype)
        v = torch.where(z > 0, 0.0, v) if self.reset is ResetRule.ZERO else v - z * self.v_th
        if self.v_min is not None:
            v = v.clamp(min=self.v_min)
        return z, v


def _reset_method(rule: ResetRule, beta: torch.Tensor, reset):
    if rule is ResetRule.ZERO:
        return reset.reset_value
    if rule is ResetRule.SUBTRACT:
        return reset.reset_subtract
    return UndecayedSubtract(beta)


def _single(kind: str, name: str, spikes: SpikeMode, node: nir.NIRNode) -> None:
    if node_floor(node, name) is not None:
        raise NallnError(
            f"{kind} node {name!r} floors its membrane (v_min); Norse's {kind} cells have no "
            "floor: use --backend lava (nalln runs v_min on IF nodes in Norse)"
        )
    if spikes is SpikeMode.MULTI:
        raise NallnError(
            f"{kind} node {name!r} sends several spikes per step (--spikes multi); Norse's "
            f"{kind} cells send one: use --backend lava (or run it as an IF)"
        )


class Flatten(nn.Module):
    """NIR Flatten: ``start_dim``/``end_dim`` count the dimensions after the batch."""

    def __init__(self, start_dim: int, end_dim: int) -> None:
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.dim() - 1
        start, end = self.start_dim % n + 1, self.end_dim % n + 1
        return x.flatten(start, end)


def _tensor(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


def node_map(
    node: nir.NIRNode, *, dt: float, norse_import, name: str = "", delay_dt: float | None = None
) -> nn.Module | None:
    """Our map from a NIR node to a torch module (``None``: nirtorch's default); a Delay
    counts its steps in ``delay_dt`` (the graph's dt, as lowering reads it)."""
    if isinstance(node, nir.LIF | nir.IF | nir.CubaLIF):
        rule, spikes = node_semantics(node, name)
    if isinstance(node, nir.LIF):
        _single("LIF", name, spikes, node)
        _, reset, _ = _require_norse()
        node_dt = float(node_meta(node).get("dt", dt))
        method = _reset_method(rule, 1 - node_dt / _tensor(node.tau), reset)
        cell = norse_import(node, ignore_warnings=True, reset_method=method, dt=node_dt)
        cell.p = cell.p._replace(v_reset=_tensor(node.v_reset), reset_method=method)
        return ScaledLIF(cell, _tensor(node.r))
    if isinstance(node, nir.IF):
        v_min = node_floor(node, name)
        if rule is not ResetRule.ZERO or spikes is SpikeMode.MULTI or v_min is not None:
            cell = IFCell(_tensor(node.v_threshold), rule, spikes, v_min)
            cell = ScaledLIF(cell, _tensor(node.r))
            cell.counts = spikes is SpikeMode.MULTI
            return cell
        import norse.torch.module.iaf as iaf

        params = iaf.IAFParameters(v_th=_tensor(node.v_threshold), v_reset=_tensor(node.v_reset))
        return ScaledLIF(iaf.IAFCell(params, dt=dt), _tensor(node.r))  # Norse ignores r
    if isinstance(node, nir.CubaLIF):
        _single("CubaLIF", name, spikes, node)
        _, reset, _ = _require_norse()
        node_dt = float(node_meta(node).get("dt", dt))
        method = _reset_method(rule, 1 - node_dt / _tensor(node.tau_mem), reset)
        # Norse's importer applies w_in and r itself
        cell = norse_import(node, ignore_warnings=True, reset_method=method, dt=node_dt)
        return ScaledLIF(cell, torch.ones(()))
    if isinstance(node, nir.Threshold):
        return ScaledLIF(ThresholdCell(_tensor(node.threshold)), torch.ones(()))
    if isinstance(node, nir.Scale):
        return _Scale(_tensor(node.scale))
    if isinstance(node, nir.LI):
        import norse.torch.module.leaky_integrator_box as li_box

        node_dt = float(node_meta(node).get("dt", dt))
        params = li_box.LIBoxParameters(
            tau_mem_inv=1 / _tensor(node.tau), v_leak=_tensor(node.v_leak)
        )
        return GainedCell(li_box.LIBoxCell(params, dt=node_dt), _tensor(node.r))
    if isinstance(node, nir.I):
        return GainedCell(IntegratorCell(), _tensor(node.r))
    if isinstance(node, nir.Conv1d):
        return _conv1d(node, name)
    if isinstance(node, nir.Conv2d):
        groups = int(np.asarray(node.groups))
        w = np.asarray(node.weight)
        conv = nn.Conv2d(
            w.shape[1] * groups,
            w.shape[0],
            tuple(w.shape[2:]),
            stride=tuple(np.atleast_1d(np.asarray(node.stride)).astype(int).tolist() * 2)[:2],
            padding=conv_padding(node),
            dilation=tuple(np.atleast_1d(np.asarray(node.dilation)).astype(int).tolist() * 2)[:2],
            groups=groups,
            bias=node.bias is not None,
        )
        return _with_weights(conv, node)
    if isinstance(node, nir.Linear):  # Norse swaps in_features and out_features
        w = np.asarray(node.weight)
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        lin.weight.data = _tensor(w)
        return lin
    if isinstance(node, nir.AvgPool2d | nir.SumPool2d):
        k = tuple(np.atleast_1d(np.asarray(node.kernel_size)).astype(int).tolist() * 2)[:2]
        s = tuple(np.atleast_1d(np.asarray(node.stride)).astype(int).tolist() * 2)[:2]
        p = tuple(np.atleast_1d(np.asarray(node.padding)).astype(int).tolist() * 2)[:2]
        pool = nn.AvgPool2d(k, s, p, count_include_pad=True)
        if isinstance(node, nir.SumPool2d):
            return nn.Sequential(pool, _Scale(float(k[0] * k[1])))
        return pool
    if isinstance(node, nir.Flatten):
        return Flatten(node.start_dim, node.end_dim)
    if isinstance(node, nir.Delay):
        d_dt = dt if delay_dt is None else delay_dt
        return DelayLine(torch.as_tensor(delay_steps(node, name, d_dt, np.shape(node.delay))))
    if isinstance(node, nir.Input | nir.Output):
        return None
    return norse_import(node, ignore_warnings=True, dt=dt)


def _conv1d(node: nir.Conv1d, name: str) -> nn.Conv1d:
    """``torch.nn.Conv1d`` read right: Norse 1.1.0's importer has no Conv1d, and nirtorch's
    default map swaps in and out channels (``weight.shape[-3]`` as ``in_channels``), drops
    ``groups`` from the channel count and needs a bias."""
    w = np.asarray(node.weight)
    groups = int(np.asarray(node.groups))
    conv = nn.Conv1d(
        w.shape[1] * groups,
        w.shape[0],
        int(w.shape[2]),
        stride=int(np.asarray(node.stride)),
        padding=conv1d_padding(node, name),
        dilation=int(np.asarray(node.dilation)),
        groups=groups,
        bias=node.bias is not None,
    )
    return _with_weights(conv, node)


def _with_weights(conv: nn.Module, node: nir.NIRNode) -> nn.Module:
    """``conv`` holding the node's weight and (if any) bias."""
    conv.weight.data = _tensor(node.weight)
    if node.bias is not None:
        conv.bias.data = _tensor(node.bias)
    return conv


class _Scale(nn.Module):
    """NIR Scale (and SumPool2d = kh*kw x AvgPool2d): ``x * factor``, broadcast per sample."""

    def __init__(self, factor: float | torch.Tensor) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class ThresholdCell(nn.Module):
    """NIR Threshold: ``z = H(x - threshold)``, stateless (Norse has no such node)."""

    def __init__(self, threshold: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("threshold", threshold)

    def forward(self, x: torch.Tensor, state=None):
        return (x > self.threshold).to(x.dtype), state


class IntegratorCell(nn.Module):
    """NIR I: ``v <- v + I`` (the step as unit of time); Norse has no such cell."""

    def forward(self, x: torch.Tensor, state=None):
        v = x if state is None else state + x
        return v, v


class DelayLine(nn.Module):
    """NIR Delay: the input of ``steps`` steps before, per element (zero before step 0); the
    state is the inputs so far (Norse has no delay node)."""

    def __init__(self, steps: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("steps", steps)

    def forward(self, x: torch.Tensor, state=None):
        past = [x] if state is None else [*state, x]
        steps = np.broadcast_to(self.steps.cpu().numpy(), x.shape[1:])  # a scalar delay too
        return delayed(past, steps, len(past) - 1), past


def _in_topological_order(executor: nn.Module, graph: nir.NIRGraph) -> nn.Module:
    """nirtorch 2.6 runs nodes in depth-first order from the input, and a node whose input is
    not yet computed in this step reads that input's value of the previous step (how it
    delays a loop). In a merge of paths of different depth that is wrong: the IF of ``LIF ->
    {A -> LIF -> B, skip}`` ran before ``skip`` and summed the previous step's skip current.
    Order the nodes topologically (as the reference does), each loop node ``w`` of ``neuron ->
    w -> neuron`` right after its neuron, so only a loop reads the previous step."""
    order = [c.name for c in chain_of(graph, "graph")]
    succ = {n: [b for a, b in graph.edges if a == n] for n in graph.nodes}
    pred = {n: [a for a, b in graph.edges if b == n] for n in graph.nodes}
    for neuron, w in recurrent_loops(graph, succ, pred).items():
        order.insert(order.index(neuron) + 1, w)
    rank = {sanitize(n): i for i, n in enumerate(order)}
    executor.execution_order = sorted(
        executor.execution_order, key=lambda node: rank.get(node.name, -1)
    )
    return executor


def sanitize(name: str) -> str:
    from nirtorch.utils import sanitize_name

    return sanitize_name(name)


class NorseNetwork(nn.Module):
    """The loaded segments (Norse GraphExecutors) and the SE gates between them."""

    def __init__(self, artefact: Artefact) -> None:
        super().__init__()
        nirtorch, _, norse_import = _require_norse()
        self.gates = artefact.gates
        self.lif_names: dict[int, str] = {}
        executors = []
        for seg in artefact.segments:
            dt = float(artefact.info.get("dt", DT_FALLBACK))
            names = {id(n): k for k, n in seg.nodes.items()}
            built: dict[str, nn.Module] = {}

            delay_dt = graph_dt(seg, artefact.info)

            def mapper(node, names=names, built=built, dt=dt, delay_dt=delay_dt):
                name = names.get(id(node), "")
                mod = node_map(node, dt=dt, norse_import=norse_import, name=name, delay_dt=delay_dt)
                if isinstance(mod, ScaledLIF):
                    built[names[id(node)]] = mod
                return mod

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                level = logging.getLogger().level
                logging.getLogger().setLevel(logging.ERROR)
                try:
                    executors.append(_in_topological_order(nirtorch.load(seg, mapper), seg))
                finally:
                    logging.getLogger().setLevel(level)
            for name, mod in built.items():
                self.lif_names[id(mod)] = name
        self.segments = nn.ModuleList(executors)
        first = artefact.segments[0]
        inp = next(n for n in first.nodes.values() if isinstance(n, nir.Input))
        self.input_shape = tuple(int(s) for s in np.asarray(inp.input_type["input"]).reshape(-1))
        self.lifs = [m for m in self.modules() if isinstance(m, ScaledLIF)]

    @torch.no_grad()
    def run(self, x: torch.Tensor, num_steps: int) -> Trace:
        """``num_steps`` steps of inputs ``x``: ``[B, *input]`` held at every step (direct
        coding) or ``[B, T, *input]`` a value per step (:class:`Drive`)."""
        drive = Drive.of(x, self.input_shape)
        drive.steps(x, num_steps)
        record: dict[str, list[torch.Tensor]] = {}
        handles = []
        for mod in self.lifs:
            name = self.lif_names[id(mod)]
            record[name] = []

            def hook(_m, _a, out, name=name, counts=mod.counts):
                record[name].append(out[0].clone() if counts else out[0] > 0)

            handles.append(mod.register_forward_hook(hook))
        states = [None] * len(self.segments)
        outputs = []
        try:
            for t in range(num_steps):
                h = drive.at(x, t).float()
                for i, seg in enumerate(self.segments):
                    h, states[i] = seg(h, states[i])
                    if i < len(self.gates):
                        h = apply_gate(self.gates[i], h)
                outputs.append(h.reshape(x.shape[0], -1).float())
        finally:
            for hd in handles:
                hd.remove()
        return Trace(torch.stack(outputs), {k: torch.stack(v) for k, v in record.items()})
