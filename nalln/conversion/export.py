"""NeurALLNet -> NIR 1.0.8, written by us (snnTorch's exporter cannot do it; toolchain.md).

The graph is a chain, named after the torch modules (``stages.0.dw_lif`` -> ``stages_0_dw_lif``)::

    input -> stem_conv -> stem_lif -> stages_0_dw_conv -> stages_0_dw_lif -> stages_0_pw_conv
          -> stages_0_pw_lif -> ... -> head_pool (AvgPool2d = GAP) -> head_flatten -> head_fc1
          -> head_lif -> head_fc2 -> output (per-step logits; the model averages them over T)

* BatchNorm is folded into the conv/linear before it (head BN1d into ``head_fc1``).
* LIF nodes carry full-shape parameters: ``tau = tau_steps * dt``, ``r = tau_steps``,
  ``v_leak = 0``, ``v_reset = 0``; node and graph metadata record ``dt`` and ``reset = "zero"``
  (NIR has no field for either). Parameters are float64 so that ``dt / tau`` is exact.
* Depthwise convs keep ``groups``. ``nir.Conv2d`` infers its input type from
  ``weight.shape[1]`` and ignores ``groups`` (nir 1.0.8 bug), so a depthwise node's stored input
  type says 1 channel; :func:`nalln.conversion.nir_io.chain_of` sets the right one on reading.
  (An unset ``input_shape`` cannot be written by ``nir.write``.)
* SE: ``static`` folds calibrated per-channel gates into the pointwise conv (one NIR-native
  graph); ``hybrid`` cuts the chain after every gated pointwise conv: segment ``i`` ends with
  that conv's current, segment ``i+1`` starts with its LIF, and the gate is a side-car
  (:class:`GateSpec`) that the simulators run between them.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np
from torch import nn

from nalln.errors import NallnError
from nalln.ir.plan import GateSpec
from nalln.ir.se_mode import SEMode
from nalln.models import naming
from nalln.models.blocks import se_blocks
from nalln.models.fold import fold_batchnorm
from nalln.models.naming import node_name
from nalln.models.neuron import LIF, LIFParameters

FORMAT = "nalln-nir/1"
DEFAULT_DT = 1e-3  # seconds per step; only the ratio dt/tau matters for the dynamics


@dataclass
class Exported:
    """What the exporter produced: one graph (static / no SE) or segments plus side-car."""

    segments: list[nir.NIRGraph]
    gates: list[GateSpec] = field(default_factory=list)
    se_mode: SEMode = SEMode.NONE
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def graph(self) -> nir.NIRGraph:
        if len(self.segments) != 1:
            raise NallnError("this export is hybrid (several NIR segments); use .segments")
        return self.segments[0]


def lif_node(shape: tuple[int, ...], p: LIFParameters, dt: float, module: str) -> nir.LIF:
    full = np.ones(shape, dtype=np.float64)
    return nir.LIF(
        tau=full * (p.tau * dt),
        r=full * p.tau,
        v_leak=full * 0.0,
        v_threshold=full * p.v_th,
        v_reset=full * 0.0,
        metadata={"dt": dt, "reset": "zero", "tau_steps": float(p.tau), "module": module},
    )


def conv_node(conv: nn.Conv2d, bn: nn.Module | None, in_hw: tuple[int, int], scale=None):
    w, b = fold_batchnorm(conv.weight, conv.bias, bn)
    if scale is not None:  # static SE gate, per output channel
        w = w * scale[:, None, None, None]
        b = b * scale
    node = nir.Conv2d(
        input_shape=tuple(int(v) for v in in_hw),
        weight=w.astype(np.float32),
        stride=tuple(conv.stride),
        padding=tuple(conv.padding),
        dilation=tuple(conv.dilation),
        groups=int(conv.groups),
        bias=b.astype(np.float32),
    )
    h, w_ = in_hw
    k, s, p = conv.kernel_size, conv.stride, conv.padding
    out_hw = ((h + 2 * p[0] - k[0]) // s[0] + 1, (w_ + 2 * p[1] - k[1]) // s[1] + 1)
    return node, (conv.out_channels, *out_hw)


class _Chain:
    """Collects nodes in order and cuts them into segments."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        self.segments: list[list[tuple[str, nir.NIRNode]]] = [
            [("input", nir.Input(input_type={"input": np.array(input_shape)}))]
        ]

    def add(self, name: str, node: nir.NIRNode) -> None:
        self.segments[-1].append((name, node))

    def cut(self, shape: tuple[int, ...]) -> None:
        self.add("output", nir.Output(output_type={"output": np.array(shape)}))
        self.segments.append([("input", nir.Input(input_type={"input": np.array(shape)}))])


def export_model(
    model: nn.Module,
    *,
    se_mode: SEMode | str = SEMode.STATIC,
    gates: dict[str, np.ndarray] | None = None,
    dt: float = DEFAULT_DT,
    meta: dict[str, Any] | None = None,
) -> Exported:
    """Export an eval-mode NeurALLNet. ``gates`` (static mode): mean gate per SE block name."""
    cfg = model.config
    se_mode = SEMode.parse(se_mode, SEMode.deployable())
    has_se = bool(se_blocks(model))
    if has_se and cfg.se_position != "current":
        raise NallnError(
            "conversion supports SE on the current (se_position='current', the default); this "
            f"model gates {cfg.se_position}"
        )
    if has_se and se_mode is SEMode.STATIC and gates is None:
        raise NallnError("static SE needs calibrated gates (see nalln.conversion.fold.mean_gates)")
    effective_mode = se_mode if has_se else SEMode.NONE
    p: LIFParameters = cfg.lif
    size = cfg.image_size
    chain = _Chain((cfg.in_channels, size, size))
    specs: list[GateSpec] = []

    node, shape = conv_node(model.stem.conv, getattr(model.stem, "bn", None), (size, size))
    chain.add(naming.STEM_CONV, node)
    chain.add(naming.STEM_LIF, lif_node(shape, p, dt, "stem_lif"))

    for prefix, block in model.named_blocks():
        node, shape = conv_node(block.dw.conv, getattr(block.dw, "bn", None), shape[1:])
        chain.add(naming.conv_name(prefix, "dw"), node)
        chain.add(naming.neuron_name(prefix, "dw"), lif_node(shape, p, dt, f"{prefix}.dw_lif"))
        scale = None
        if block.se is not None and effective_mode is SEMode.STATIC:
            scale = np.asarray(gates[prefix], dtype=np.float64)
        node, shape = conv_node(block.pw.conv, getattr(block.pw, "bn", None), shape[1:], scale)
        chain.add(naming.conv_name(prefix, "pw"), node)
        if block.se is not None and effective_mode is SEMode.HYBRID:
            se = block.se
            specs.append(
                GateSpec(
                    name=f"{prefix}.se",
                    after_segment=len(chain.segments) - 1,
                    w1=se.fc1.weight.detach().double().numpy(),
                    b1=se.fc1.bias.detach().double().numpy(),
                    w2=se.fc2.weight.detach().double().numpy(),
                    b2=se.fc2.bias.detach().double().numpy(),
                    current_scale=getattr(se, "current_scale", None),
                )
            )
            chain.cut(shape)
        chain.add(naming.neuron_name(prefix, "pw"), lif_node(shape, p, dt, f"{prefix}.pw_lif"))

    head = model.head
    c, h, w = shape
    chain.add(
        naming.HEAD_POOL,
        nir.AvgPool2d(
            kernel_size=np.array([h, w]), stride=np.array([h, w]), padding=np.array([0, 0])
        ),
    )
    chain.add(
        naming.HEAD_FLATTEN, nir.Flatten(input_type={"input": np.array([c, 1, 1])}, start_dim=0)
    )
    if head.fc1 is not None:
        wt, b = fold_batchnorm(head.fc1.weight, head.fc1.bias, head.bn)
        chain.add(
            naming.HEAD_FC1, nir.Affine(weight=wt.astype(np.float32), bias=b.astype(np.float32))
        )
        chain.add(naming.HEAD_LIF, lif_node((wt.shape[0],), p, dt, "head.lif"))
    wt, b = fold_batchnorm(head.fc2.weight, head.fc2.bias, None)
    chain.add(naming.HEAD_FC2, nir.Affine(weight=wt.astype(np.float32), bias=b.astype(np.float32)))
    chain.add("output", nir.Output(output_type={"output": np.array([wt.shape[0]])}))

    spiking = {node_name(n): n for n, m in model.named_modules() if isinstance(m, LIF)}
    info = {
        **(meta or {}),
        "se_mode": effective_mode,
        "num_steps": int(cfg.num_steps),
        "spiking_layers": spiking,
        "readout": "mean over time steps of the output current (logits)",
    }
    graphs = []
    for i, nodes in enumerate(chain.segments):
        names = [n for n, _ in nodes]
        graph = nir.NIRGraph(
            nodes=dict(nodes),
            edges=list(itertools.pairwise(names)),
            metadata=graph_metadata(info, dt, i, len(chain.segments)),
            type_check=False,
        )
        graphs.append(graph)
    return Exported(graphs, specs, effective_mode, info)


def graph_metadata(info: dict[str, Any], dt: float, segment: int, n_segments: int) -> dict:
    """Graph-level metadata: flat scalars NIR can store, plus our details as one JSON string."""
    return {
        "format": FORMAT,
        "dt": float(dt),
        "reset": "zero",
        "num_steps": int(info["num_steps"]),
        "se_mode": info["se_mode"],
        "segment": segment,
        "num_segments": n_segments,
        "nalln": json.dumps(info, sort_keys=True),
    }
