"""The float reference simulation of a plan (NIR semantics, float64 by default).

Both return a :class:`Trace`: per-step output ``[T, B, K]`` and per-layer spikes ``[T, B, ...]``
keyed by NIR node name, which is what every back-end is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from nalln.ir.drive import Drive
from nalln.ir.plan import PLAN_INPUT, GateSpec, Neuron, Plan, Synapse
from nalln.ir.semantics import ResetRule, SpikeMode


@dataclass
class Trace:
    """What one simulation produced for a batch of images."""

    outputs: torch.Tensor  # [T, B, K]: per-step readout current (logits) or output spikes
    spikes: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> bool [T, B, ...]
    # (spike counts, float, for a population that sends several per step: SpikeMode.MULTI)

    @property
    def logits(self) -> torch.Tensor:
        """Time-averaged output, as the torch model decodes it."""
        return self.outputs.float().mean(0)

    def cat(self, other: Trace) -> Trace:
        return Trace(
            torch.cat([self.outputs, other.outputs], 1),
            {k: torch.cat([v, other.spikes[k]], 1) for k, v in self.spikes.items()},
        )


def concat(traces: list[Trace]) -> Trace:
    out = traces[0]
    for t in traces[1:]:
        out = out.cat(t)
    return out


def apply_synapse(syn: Synapse, x: torch.Tensor) -> torch.Tensor:
    """The synapse's current (bias included) for a batch ``x`` [B, *in_shape]."""
    w = torch.as_tensor(syn.weight, dtype=x.dtype)
    b = torch.as_tensor(syn.bias, dtype=x.dtype)
    if syn.kind == "conv":  # a Conv1d's [B, C, L] runs as [B, C, 1, L] (ir.plan.image_shape)
        x = x.reshape(x.shape[0], *syn.in_image)
        return F.conv2d(x, w, b, stride=syn.stride, padding=syn.padding, groups=syn.groups)
    return F.linear(x.reshape(x.shape[0], -1), w, b)


def apply_gate(gate: GateSpec, x: torch.Tensor) -> torch.Tensor:
    """SE on a current ``x`` [B, C, H, W], per sample."""
    d = dict(dtype=x.dtype)
    pooled = x.mean(dim=(2, 3))
    hidden = torch.relu(
        F.linear(pooled, torch.as_tensor(gate.w1, **d), torch.as_tensor(gate.b1, **d))
    )
    g = torch.sigmoid(
        F.linear(hidden, torch.as_tensor(gate.w2, **d), torch.as_tensor(gate.b2, **d))
    )
    y = x * g[:, :, None, None]
    if gate.current_scale is not None:  # fine-tuned for hybrid fixed point
        y = torch.round(y * gate.current_scale) / gate.current_scale
    return y


def fire(n: Neuron, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One step's spikes of population ``n`` (bool, or counts for ``multi``), its membrane after
    the reset (and the floor ``v_min``), and what a ``subtract-undecayed`` reset still owes the
    next step (after its decay); :mod:`nalln.ir.semantics`."""
    if n.spikes is SpikeMode.MULTI:
        z = torch.where(mem > 0, torch.div(mem, n.v_th, rounding_mode="floor"), 0.0)
        fired = z > 0
    else:
        z = fired = mem > n.v_th
    if n.reset is ResetRule.ZERO:
        return z, _floor(n, mem.masked_fill(fired, 0.0)), None
    amount = z.to(mem.dtype) * n.v_th
    if n.reset is ResetRule.SUBTRACT:
        return z, _floor(n, mem - amount), None
    return z, mem, amount


def _floor(n: Neuron, v: torch.Tensor) -> torch.Tensor:
    return v if n.v_min is None else v.clamp(min=n.v_min)


def delayed(history: list[torch.Tensor], delay: np.ndarray, t: int) -> torch.Tensor:
    """Step ``t`` of a value read ``delay`` steps late per element (zero before its step 0):
    ``history`` holds the value of steps ``0..t`` ([B, *shape] each)."""
    values = torch.stack(history)  # [t + 1, B, *shape]
    d = torch.as_tensor(np.array(delay, dtype=np.int64))  # a copy: writable
    idx = t - d
    valid = (idx >= 0).to(values.dtype)
    idx = idx.clamp(min=0).expand(1, values.shape[1], *d.shape)
    return values.gather(0, idx)[0] * valid


def delay_trace(s: torch.Tensor, delay: np.ndarray | None) -> torch.Tensor:
    """A whole trace ``s`` [T, N, *shape] read ``delay`` steps late per element (zeros first):
    what a delayed synapse reads, for the back-ends that run layer by layer."""
    if delay is None:
        return s
    T = s.shape[0]
    d = torch.as_tensor(np.array(delay, dtype=np.int64), device=s.device)
    t = torch.arange(T, device=s.device).view(T, *([1] * d.dim()))
    idx = t - d  # [T, *shape]
    valid = (idx >= 0).unsqueeze(1)
    idx = idx.clamp(min=0).unsqueeze(1).expand(T, *s.shape[1:])
    return torch.where(valid, s.gather(0, idx), torch.zeros((), dtype=s.dtype, device=s.device))


def delayed_sources(plan: Plan) -> set[str]:
    """What some synapse reads with a delay (its history must be kept)."""
    return {
        plan.reads(k, syn)
        for k, st in enumerate(plan.stages)
        if st.synapse is not None
        for syn in st.synapses
        if syn.delay is not None
    }


@torch.no_grad()
def run_plan(plan: Plan, x: torch.Tensor, dtype: torch.dtype = torch.float64) -> Trace:
    """Simulate the plan on inputs ``x``: ``[B, *input_shape]`` held at each of the T steps
    (direct coding), or ``[B, T, *input_shape]`` with a value per step (:class:`Drive`).

    Stages run in topological order within each step; a synapse reads the stage before it or
    (``Synapse.reads``) the input or an earlier population's output of the same step (of
    ``delay`` steps before, where delayed), and a population sums its synapses' currents."""
    drive = Drive.of(x, plan.input_shape)
    drive.steps(x, plan.num_steps)
    x = x.to(dtype)
    v = {s.name: None for s in plan.stages if s.neuron is not None}
    u = dict(v)  # synaptic current state (CubaLIF); unused where current_decay == 1
    owed: dict[str, torch.Tensor] = {}  # subtract-undecayed: the reset of the previous step
    spikes: dict[str, list[torch.Tensor]] = {n: [] for n in v}
    history: dict[str, list[torch.Tensor]] = {n: [] for n in delayed_sources(plan)}
    outputs = []
    for t in range(plan.num_steps):
        h = drive.at(x, t)
        outs = {PLAN_INPUT: h}
        if PLAN_INPUT in history:
            history[PLAN_INPUT].append(h)
        for k, stage in enumerate(plan.stages):
            cur = None
            for syn in stage.synapses:
                if syn.delay is not None:
                    src = delayed(history[plan.reads(k, syn)], syn.delay, t)
                else:
                    src = h if syn.reads is None else outs[syn.reads]
                c = apply_synapse(syn, src)
                cur = c if cur is None else cur + c.reshape(cur.shape)
            if stage.gate is not None:
                cur = apply_gate(stage.gate, cur)
            n = stage.neuron
            if n is None:
                ro = stage.readout
                if ro is not None:  # LI / Integrator: the output is its membrane
                    prev = v.get(ro.name)
                    cur = cur if prev is None else (1.0 - ro.decay) * prev + cur
                    v[ro.name] = cur
                h = cur
            else:
                cur = cur.reshape(x.shape[0], *n.shape)
                if stage.recurrent is not None and spikes[stage.name]:  # one step late, as NIR
                    prev = spikes[stage.name][-1].to(dtype)
                    cur = cur + apply_synapse(stage.recurrent, prev).reshape(cur.shape)
                if n.current_decay != 1.0:
                    if u[stage.name] is not None:
                        cur = (1.0 - n.current_decay) * u[stage.name] + cur
                    u[stage.name] = cur
                mem = cur if v[stage.name] is None else (1.0 - n.decay) * v[stage.name] + cur
                if stage.name in owed:
                    mem = mem - owed.pop(stage.name)
                s, v[stage.name], owe = fire(n, mem)
                if owe is not None:
                    owed[stage.name] = owe
                spikes[stage.name].append(s)
                h = s.to(dtype)
            outs[stage.name] = h
            if stage.name in history:
                history[stage.name].append(h)
        outputs.append(h.reshape(x.shape[0], -1))
    return Trace(torch.stack(outputs), {k: torch.stack(s) for k, s in spikes.items()})


def batched(fn, x: torch.Tensor, batch_size: int) -> Trace:
    """Run ``fn`` on slices of ``x`` and concatenate the traces."""
    return concat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def as_numpy_spikes(trace: Trace) -> dict[str, np.ndarray]:
    return {k: v.cpu().numpy() for k, v in trace.spikes.items()}
