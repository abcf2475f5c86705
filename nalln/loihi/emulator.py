"""The bit-exact Loihi emulator: a whole quantised plan in integer arithmetic, batched in torch.

It reproduces Lava's fixed-point processes spike for spike (the tests run both) and counts every
value that leaves its register, per layer, so nothing is clipped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nalln.errors import NallnError
from nalln.ir.plan import PLAN_INPUT
from nalln.ir.reference import Trace, delay_trace
from nalln.loihi.arithmetic import (
    A_MAX,
    ACT_SHIFT,
    VTH_MAX,
    counts,
    kept,
    lif_spikes,
    narrow,
    per_neuron_bias,
    readout_membrane,
    round_input,
    run_stage,
    spike_stage,
    with_gate,
)
from nalln.loihi.onchip_se import onchip_gate_int
from nalln.loihi.quant_plan import QStage, QuantPlan


def gated(q: QStage, a: torch.Tensor) -> tuple[torch.Tensor, dict[str, int]]:
    """The current a gated stage's neurons receive (bias included): the hybrid side-car's, or
    the on-chip gate's (integer semantics, :mod:`nalln.loihi.onchip_se`), and its overflows."""
    if q.onchip is None:
        return with_gate(q, a), {}
    bias = torch.from_numpy(q.bias.astype(np.int64)).to(a.device).view(1, 1, -1, 1, 1)
    return onchip_gate_int(q.onchip, a.round().to(torch.int64) + bias)


def as_population(s: torch.Tensor, q: QStage) -> torch.Tensor:
    """Spikes [T, N, ...] in the population's NIR shape (a Conv1d's [C, 1, L'] is [C, L'])."""
    shape = tuple(q.neuron.shape)
    return s if tuple(s.shape[2:]) == shape else s.reshape(*s.shape[:2], *shape)


def readout_outputs(q: QStage, a: torch.Tensor) -> tuple[torch.Tensor, dict[str, int]]:
    """The readout's float output per step [T, N, K] and its overflow counts: the current
    ``(a + bias) / S`` (nalln's own readout: the host reads the synaptic input), or an LI /
    Integrator's membrane ``v / (64 S)`` (:func:`readout_membrane`, on the chip)."""
    T, n = a.shape[:2]
    if q.stage.readout is not None:
        v, over = readout_membrane(a, q, VTH_MAX)
        return v.reshape(T, n, -1).double() / (2**ACT_SHIFT * q.scale), over
    shape = tuple(a.shape[2:])
    bias = per_neuron_bias(q.bias, shape).to(a.device).double()
    total = a.sum(0) + T * bias
    out = (a + bias) / q.scale
    return out.reshape(T, n, -1), {"readout": int((total.abs() > A_MAX).sum())}


def _graph_current(
    qp: QuantPlan,
    k: int,
    q: QStage,
    outs: dict[str, torch.Tensor],
    peaks: dict[str, float],
    T: int,
) -> torch.Tensor:
    """The synaptic input [T, N, ...] of stage ``k`` of a graph: each synapse on what it reads
    (the graded input or a population's spikes or counts, ``delay`` steps late where delayed), the
    merged synapses' integer currents summed (float64, exact below 2^53)."""
    total = None
    for i, syn in enumerate(q.stage.synapses):
        part = q if i == 0 else q.part(i - 1)
        src = qp.plan.reads(k, syn)
        inp = outs[src]
        if src == PLAN_INPUT:
            a = run_stage(part, inp, True, T)
        else:
            a = run_stage(part, delay_trace(inp, syn.delay), False, T, peaks[src])
        total = a.double() if total is None else total + a.double()
    return narrow(total)


@dataclass
class Emulation:
    trace: Trace
    overflow: dict[str, dict[str, int]]  # layer -> kind -> count

    @property
    def overflowed(self) -> dict[str, dict[str, int]]:
        return {
            k: {n: c for n, c in v.items() if c}
            for k, v in self.overflow.items()
            if any(v.values())
        }


@torch.no_grad()
def emulate(qp: QuantPlan, x: torch.Tensor) -> Emulation:
    """Bit-exact fixed-point simulation of ``qp`` on normalised images ``x`` [N, C, H, W]."""
    return _emulate(qp, x, None, None)


def _keep(
    s: torch.Tensor, sink: dict[str, torch.Tensor] | None, name: str, graded: bool = False
) -> torch.Tensor:
    """The layer's spikes as bool (``graded``: float32 counts), written into ``sink[name]`` (a
    slice of the whole split's trace) when it has their shape and dtype, saving a copy and a
    concatenation."""
    out = None if sink is None else sink.get(name)
    want = torch.float32 if graded else torch.bool
    if out is None or out.shape != s.shape or out.dtype != want:
        return s.to(want)
    return out.copy_(s)


def _emulate(
    qp: QuantPlan,
    x: torch.Tensor,
    sink: dict[str, torch.Tensor] | None,
    pool: dict[tuple, Any] | None,
) -> Emulation:
    """:func:`emulate`, writing the trace into ``sink`` and lending spike buffers from ``pool``
    (nothing returned refers to a pooled buffer)."""
    T = qp.plan.num_steps
    xi, in_over = round_input(x, qp.input_scale)
    h: torch.Tensor = xi
    spikes: dict[str, torch.Tensor] = {}
    overflow: dict[str, dict[str, int]] = {}
    outputs = None
    outs: dict[str, torch.Tensor] = {PLAN_INPUT: xi}  # what a synapse may read (a graph)
    peaks: dict[str, float] = {PLAN_INPUT: 1.0}  # the largest spike count each carries
    peak = 1.0  # the largest spike count h carries (a multi-spike layer's graded spikes)
    for k, q in enumerate(qp.stages):
        over = {"input": in_over} if k == 0 else {}
        plain = not q.merged and q.synapse.reads is None and q.synapse.delay is None
        fuse = q.neuron is not None and peak == 1.0 and plain
        keep = None if sink is None else sink.get(q.name)
        fused = spike_stage(q, h, T, k == 0, pool, keep) if fuse else None
        if fused is not None:  # the same arithmetic, bounds proven (see spike_stage)
            s, o = fused
            overflow[q.name] = {**over, **o}
            if kept(keep, s):  # written chunk by chunk while in the cache
                spikes[q.name] = as_population(keep, q)
            else:
                spikes[q.name] = _keep(as_population(s, q), sink, q.name)
            h = outs[q.name] = s
            peaks[q.name] = 1.0
            continue
        graph = not plain
        a = _graph_current(qp, k, q, outs, peaks, T) if graph else run_stage(q, h, k == 0, T, peak)
        if q.neuron is None:
            outputs, o = readout_outputs(q, a)
            overflow[q.name] = {**over, **o}
            break
        if q.gate is not None or q.onchip is not None:
            a, o_gate = gated(q, a)
            over.update(o_gate)
            s, o = lif_spikes(a, q, None, q.vth)
        else:
            s, o = lif_spikes(a, q, q.bias, q.vth)
        overflow[q.name] = {**over, **o}
        spikes[q.name] = _keep(as_population(s, q), sink, q.name, counts(q))
        peak = max(float(s.max()), 1.0) if counts(q) and s.numel() else 1.0
        peaks[q.name] = peak
        h = outs[q.name] = s  # 0/1 (or counts) in the layout the next synapse reads
    if outputs is None:
        outputs = h.reshape(T, h.shape[1], -1).to(torch.float32, copy=True)
    return Emulation(Trace(outputs.reshape(T, x.shape[0], -1).float(), spikes), overflow)


@torch.no_grad()
def emulate_batched(
    qp: QuantPlan,
    x: torch.Tensor,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    *,
    keep_spikes: bool = True,
    progress: bool = False,
) -> Emulation:
    """:func:`emulate` in batches on ``device`` (CPU or CUDA; integer maths is exact on both),
    traces gathered on the CPU and overflow counts summed; ``keep_spikes=False`` keeps only the
    outputs (bounded memory for a whole test split at 224 px). On the CPU a batch holds at most
    :data:`CPU_BATCH` images (:func:`cpu_batch`)."""
    from tqdm.auto import tqdm

    batch_size = cpu_batch(batch_size, device)

    outputs, overflow = [], {}
    T, n = qp.plan.num_steps, len(x)
    whole = {  # the split's trace, filled in place batch by batch
        q.name: torch.empty((T, n, *q.out_shape), dtype=torch.float32 if counts(q) else torch.bool)
        for q in qp.stages
        if keep_spikes and q.neuron is not None
    }
    seen: set[str] = set()
    pool: dict[tuple, Any] = {}  # the held image's spike buffers and weights, batch after batch
    starts = range(0, n, batch_size)
    for i in tqdm(starts, desc="loihi emulator", disable=not progress, leave=False, unit="batch"):
        part = slice(i, min(i + batch_size, n))
        sink = {k: v[:, part] for k, v in whole.items()} if device_is_cpu(device) else None
        em = _emulate(qp, x[part].to(device), sink, pool)
        outputs.append(em.trace.outputs.cpu())
        if keep_spikes:
            seen.update(em.trace.spikes)
            for k, v in em.trace.spikes.items():
                if k not in whole or whole[k].shape[2:] != v.shape[2:]:  # not as planned
                    whole[k] = torch.empty((T, n, *v.shape[2:]), dtype=v.dtype)
                target = None if sink is None else sink.get(k)
                if target is None or v.data_ptr() != target.data_ptr():
                    whole[k][:, part].copy_(v)
        add_overflow(overflow, em.overflow)
    spikes = {k: v for k, v in whole.items() if k in seen}
    return Emulation(Trace(torch.cat(outputs, 1), spikes), overflow)


CPU_BATCH = 24  # images per batch on the CPU (measured: docs/conversion.md, "CPU_BATCH")


def cpu_batch(batch_size: int, device: torch.device | str) -> int:
    """The batch :func:`emulate_batched` runs on ``device``: on the CPU at most
    :data:`CPU_BATCH` images, whose buffers (a few MiB a layer) the allocator reuses from batch
    to batch; larger ones take fresh pages, which fault in slowly (at 32 images, 64 px:
    about 150 page faults per image, a sixth of the CPU time)."""
    return min(batch_size, CPU_BATCH) if device_is_cpu(device) else batch_size


def device_is_cpu(device: torch.device | str) -> bool:
    return torch.device(device).type == "cpu"


def add_overflow(total: dict[str, dict[str, int]], part: dict[str, dict[str, int]]) -> None:
    """Add one batch's (or rank's) overflow counts into ``total``, layer by layer and kind."""
    for layer, kinds in part.items():
        acc = total.setdefault(layer, {})
        for kind, count in kinds.items():
            acc[kind] = acc.get(kind, 0) + count


def check_overflow(em: Emulation, what: str) -> None:
    """One-line error naming every layer that overflowed (nothing is clipped silently)."""
    bad = em.overflowed
    if bad:
        parts = "; ".join(
            f"{layer}: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
            for layer, kinds in bad.items()
        )
        raise NallnError(
            f"fixed-point overflow on {what} ({parts} values out of range); recalibrate with "
            "more or more typical calibration images (--calibration N)"
        )


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of equal entries (spikes or labels); the same entries in another shape (a
    Conv1d population as [C, 1, L] or [C, L]) are compared in C order, never broadcast."""
    if a.shape != b.shape and a.numel() == b.numel():
        a = a.reshape(b.shape)
    return float((a == b).double().mean())
