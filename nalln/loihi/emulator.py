"""The bit-exact Loihi emulator: a whole quantised plan in integer arithmetic, batched in torch.

It reproduces Lava's fixed-point processes spike for spike (the tests run both) and counts every
value that leaves its register, per layer, so nothing is clipped silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nalln.errors import NallnError
from nalln.ir.reference import Trace
from nalln.loihi.arithmetic import A_MAX, lif_fixed, round_input, run_stage, with_gate
from nalln.loihi.onchip_se import onchip_gate_int
from nalln.loihi.quant_plan import QStage, QuantPlan


def gated(q: QStage, a: torch.Tensor) -> tuple[torch.Tensor, dict[str, int]]:
    """The current a gated stage's neurons receive (bias included): the hybrid side-car's, or
    the on-chip gate's (integer semantics, :mod:`nalln.loihi.onchip_se`), and its overflows."""
    if q.onchip is None:
        return with_gate(q, a), {}
    bias = torch.from_numpy(q.bias.astype(np.int64)).to(a.device).view(1, 1, -1, 1, 1)
    return onchip_gate_int(q.onchip, a.round().to(torch.int64) + bias)


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
    T = qp.plan.num_steps
    xi, in_over = round_input(x, qp.input_scale)
    h: torch.Tensor = xi
    spikes: dict[str, torch.Tensor] = {}
    overflow: dict[str, dict[str, int]] = {}
    outputs = None
    for k, q in enumerate(qp.stages):
        a = run_stage(q, h, k == 0, T)
        over = {"input": in_over} if k == 0 else {}
        if q.neuron is None:
            bias = torch.from_numpy(q.bias.astype(np.float64)).to(a.device)
            total = a.sum(0) + T * bias
            over["readout"] = int((total.abs() > A_MAX).sum())
            outputs = (a + bias) / q.scale
            overflow[q.name] = over
            break
        if q.gate is not None or q.onchip is not None:
            a, o_gate = gated(q, a)
            over.update(o_gate)
            s, o = lif_fixed(a, q, None, q.vth)
        else:
            s, o = lif_fixed(a, q, q.bias, q.vth)
        overflow[q.name] = {**over, **o}
        spikes[q.name] = s
        h = s
    if outputs is None:
        outputs = h.reshape(T, h.shape[1], -1).float()
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
    outputs (bounded memory for a whole test split at 224 px)."""
    from tqdm.auto import tqdm

    outputs, spikes, overflow = [], {}, {}
    starts = range(0, len(x), batch_size)
    for i in tqdm(starts, desc="loihi emulator", disable=not progress, leave=False, unit="batch"):
        em = emulate(qp, x[i : i + batch_size].to(device))
        outputs.append(em.trace.outputs.cpu())
        if keep_spikes:
            for k, v in em.trace.spikes.items():
                spikes.setdefault(k, []).append(v.cpu())
        for layer, kinds in em.overflow.items():
            acc = overflow.setdefault(layer, {})
            for kind, n in kinds.items():
                acc[kind] = acc.get(kind, 0) + n
    trace = Trace(torch.cat(outputs, 1), {k: torch.cat(v, 1) for k, v in spikes.items()})
    return Emulation(trace, overflow)


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
    """Fraction of equal entries (spikes or labels)."""
    return float((a == b).double().mean())
