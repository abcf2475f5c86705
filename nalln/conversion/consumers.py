"""Running a NIR graph in other tools' stock importers, the way their users do.

``snntorch.import_nir.import_from_nir`` (snnTorch 1.0) and ``norse.torch.from_nir`` (Norse 1.1)
each return a torch module that takes one time step ``(x, state) -> (output, state)``. These
helpers run such a module for ``T`` steps on the same input (direct coding, as nalln does) and
record every LIF module's spikes under its NIR node name, so that they can be compared with
nalln's :class:`~nalln.conversion.reference.Trace`. They call the importers unchanged: what
they measure is what a user of those tools gets (docs/conversion.md, "Other tools").
"""

from __future__ import annotations

import contextlib
import io
import logging

import nir
import torch
from torch import nn

from nalln.conversion.portable import PORTABLE_DT
from nalln.ir.reference import Trace


def run_stepwise(net: nn.Module, x: torch.Tensor, steps: int, lif_type: type) -> Trace:
    """``steps`` calls of an imported network on ``x``; spikes of every ``lif_type`` module."""
    record: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, mod in net.named_modules():
        if isinstance(mod, lif_type):
            record[name] = []

            def hook(_m, _a, out, name=name):
                record[name].append((out[0] if isinstance(out, tuple) else out) > 0)

            handles.append(mod.register_forward_hook(hook))
    state, outputs = None, []
    try:
        with torch.no_grad():
            for _ in range(steps):
                out, state = net(x, state)
                outputs.append(out.reshape(x.shape[0], -1).float())
    finally:
        for h in handles:
            h.remove()
    return Trace(torch.stack(outputs), {k: torch.stack(v) for k, v in record.items()})


def load_snntorch(graph: nir.NIRGraph) -> nn.Module:
    """snnTorch's importer, its prints (it echoes whole parameter arrays) swallowed."""
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):
        return import_from_nir(graph)


def run_snntorch(graph: nir.NIRGraph, x: torch.Tensor, steps: int) -> Trace:
    """Import with snnTorch and run; the state is reset first (``Leaky(init_hidden=True)``
    keeps its membrane between calls of the same batch shape)."""
    import snntorch
    from snntorch.utils import reset

    net = load_snntorch(graph)
    reset(net)
    return run_stepwise(net, x, steps, snntorch.Leaky)


def load_norse(graph: nir.NIRGraph, dt: float | None = PORTABLE_DT) -> nn.Module:
    """Norse's importer with ``dt`` (``None``: Norse's default, 1 ms); its per-LIF warnings
    about ``r`` silenced."""
    import norse.torch

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return norse.torch.from_nir(graph) if dt is None else norse.torch.from_nir(graph, dt=dt)
    finally:
        root.setLevel(level)


def run_norse(
    graph: nir.NIRGraph, x: torch.Tensor, steps: int, dt: float | None = PORTABLE_DT
) -> Trace:
    """Import with Norse (``dt`` as :func:`load_norse`) and run."""
    from norse.torch.module.lif_box import LIFBoxCell

    return run_stepwise(load_norse(graph, dt), x, steps, LIFBoxCell)
