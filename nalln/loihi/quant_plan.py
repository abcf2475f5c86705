"""A plan on Loihi's integer grid: each quantised stage wraps its float stage, immutably.

:class:`QStage` keeps the float :class:`~nalln.ir.plan.Stage` it came from and adds the integer
weights, biases, threshold and decay; everything structural (shapes, stride, gate, neuron) is
read through to the float stage, so a builder treats both alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nalln.ir.plan import GateSpec, Neuron, Plan, Readout, Stage, Synapse
from nalln.ir.semantics import departures

if TYPE_CHECKING:
    from nalln.loihi.onchip_se import OnchipGate


@dataclass(frozen=True)
class BiasDrive:
    """A bias that must enter the synaptic current ``u``, not the membrane (where Loihi's
    ``bias_mant`` goes): a CubaLIF's input bias (every step) or a loop Affine's bias (from the
    window's second step, as the loop's spikes). On chip: an always-on neuron's spike through a
    dense column of these weights (mantissa << ``exp``)."""

    values: np.ndarray  # per output channel (conv) or neuron (dense), in units of ``a``
    exp: int = 0  # the column's weight_exp (fixed point)
    from_step: int = 0  # 0: every step; 1: not on the window's first step


def bias_in_current(stage: Stage) -> bool:
    """A CubaLIF's input bias must pass through its decaying current, so it cannot be Lava's
    ``bias_mant`` (added to the membrane): it becomes a :class:`BiasDrive`."""
    n = stage.neuron
    return n is not None and n.current_decay != 1.0 and bool(np.any(stage.synapse.bias != 0))


@dataclass(frozen=True)
class QSynapse:
    """A merged synapse (:attr:`~nalln.ir.plan.Stage.merged`) on its population's scale: its
    integers (mantissa << ``exp``, in units of ``a``) and the weight exponent that lets its
    8-bit mantissas share the scale ``S`` of the population's other synapses."""

    synapse: Synapse
    weight: np.ndarray  # int64, torch layout
    exp: int = 0


@dataclass(frozen=True)
class QStage:
    """One quantised synapse -> [gate] -> neuron (or readout) stage."""

    stage: Stage
    weight: np.ndarray  # int64, torch layout
    bias: np.ndarray  # int64 per output channel, in units of ``a``
    scale: float  # S: float current = a / S
    vth: int = 0
    dv: int = 0
    du: int = 4095  # Lava's du: 4095 keeps no current (LIF, IF); below, a CubaLIF's decay
    recurrent: np.ndarray | None = None  # int64 [n, n]: the loop weights, in units of ``a``
    recurrent_exp: int = 0  # the loop Dense's weight_exp: ``recurrent`` = mantissa << exp
    drives: tuple[BiasDrive, ...] = ()  # biases into the current (then ``bias`` is 0 for them)
    calibration: Mapping[str, Any] = field(default_factory=dict)
    onchip: OnchipGate | None = None  # SEMode.ONCHIP: the gate's integers (replaces ``gate``)
    vmin: int | None = None  # the membrane floor's mantissa, round(v_min S): v >= vmin << 6
    merged: tuple[QSynapse, ...] = ()  # the stage's merged synapses; their biases are in ``bias``

    def part(self, i: int) -> QStage:
        """Merged synapse ``i`` as a stage of its own (no bias, loop or drive), so the
        synaptic arithmetic computes its current like any stage's."""
        m = self.merged[i]
        stage = replace(self.stage, synapse=m.synapse, merged=(), recurrent=None, gate=None)
        zero = np.zeros_like(self.bias)
        return replace(
            self, stage=stage, weight=m.weight, bias=zero, recurrent=None, drives=(), merged=()
        )

    @property
    def synapse(self) -> Synapse:
        return self.stage.synapse

    @property
    def synapses(self) -> tuple[Synapse, ...]:
        return self.stage.synapses

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def kind(self) -> str:
        return self.stage.synapse.kind

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.stage.synapse.in_shape)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.stage.synapse.out_shape)

    @property
    def stride(self) -> tuple[int, int]:
        return tuple(self.stage.synapse.stride)

    @property
    def padding(self) -> tuple[int, int]:
        return tuple(self.stage.synapse.padding)

    @property
    def groups(self) -> int:
        return int(self.stage.synapse.groups)

    @property
    def gate(self) -> GateSpec | None:
        return self.stage.gate

    @property
    def neuron(self) -> Neuron | None:
        return self.stage.neuron

    def semantics(self) -> dict[str, Any]:
        """The population's reset, spikes per step and floor, where they are not NIR's."""
        n = self.neuron
        if n is None or not departures(n.reset, n.spikes, n.v_min):
            return {}
        return {"reset": n.reset.value, "spikes": n.spikes.value, "vmin": self.vmin}

    @property
    def readout(self) -> Readout | None:
        """An LI / Integrator readout (a LIF that never fires: ``dv``, ``vth`` = 17-bit max)."""
        return self.stage.readout

    def describe(self) -> dict[str, Any]:
        """Everything but the tensors, as JSON-ready values."""
        return {
            "name": self.name,
            "kind": self.kind,
            "scale": self.scale,
            "in_shape": list(self.in_shape),
            "out_shape": list(self.out_shape),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "groups": self.groups,
            "vth": self.vth,
            "dv": self.dv,
            "du": self.du,
            **self.semantics(),
            "recurrent": None if self.stage.recurrent is None else self.stage.recurrent.source,
            "recurrent_exp": self.recurrent_exp,
            "bias_drives": [
                {"exp": d.exp, "from_step": d.from_step, "values": d.values.astype(int).tolist()}
                for d in self.drives
            ],
            "calibration": dict(self.calibration),
            "gate": self.gate.name if self.gate else None,
            "neuron": self.neuron.name if self.neuron else None,
            **({} if self.readout is None else {"readout": self.readout.nir_type}),
            **(
                {"merged": [{"source": m.synapse.source, "exp": m.exp} for m in self.merged]}
                if self.merged
                else {}
            ),
        }


@dataclass(frozen=True)
class QuantPlan:
    plan: Plan
    input_scale: float
    stages: tuple[QStage, ...]
    report: Mapping[str, Any] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        """Per-layer calibration summary (what the report and docs show)."""
        return [
            {
                "layer": q.name,
                "kind": q.kind,
                "scale": q.scale,
                "vth": q.vth,
                "dv": q.dv,
                "du": q.du,
                "max_abs_weight": int(np.abs(q.weight).max()),
                **({} if q.recurrent is None else {"recurrent_exp": q.recurrent_exp}),
                **q.semantics(),
                **q.calibration,
            }
            for q in self.stages
        ]


def save_quant_plan(qp: QuantPlan, folder: str | Path) -> dict[str, Path]:
    """Integer parameters as safetensors plus a JSON description (no pickle)."""
    from safetensors.numpy import save as st_save

    from nalln.io import write_bytes, write_json

    folder = Path(folder)
    tensors = {}
    layers = []
    for q in qp.stages:
        tensors[f"{q.name}/weight"] = np.ascontiguousarray(q.weight.astype(np.int32))
        tensors[f"{q.name}/bias"] = np.ascontiguousarray(q.bias.astype(np.int32))
        if q.recurrent is not None:
            tensors[f"{q.name}/recurrent"] = np.ascontiguousarray(q.recurrent.astype(np.int32))
        for m in q.merged:
            key = f"{q.name}/merged/{m.synapse.source}"
            tensors[key] = np.ascontiguousarray(m.weight.astype(np.int32))
        layers.append(q.describe())
    spec = {
        "format": "nalln-loihi-fixed/1",
        "arithmetic": (
            "a = W_int * s (conv: 8-bit; dense: even 8-bit mantissa x 2) + recurrent_int * "
            "s(t-1); per step u = trunc(u * (4096 - (du + 1)) / 4096) + (a << 6); "
            "v = trunc(v * (4096 - dv) / 4096) + u + (bias << 6); spike if v > (vth << 6); "
            "v = 0 after a spike (a layer with reset/spikes/vmin: z = v // (vth << 6) where "
            "v > 0 for multi, v -= z (vth << 6) for subtract, that amount subtracted the next "
            "step with the bias for subtract-undecayed, then v = max(v, vmin << 6)); "
            "float current = a / scale; input = round(x * input_scale); "
            "an LI / Integrator readout is that LIF with du = 4095, vth = 2^17 - 1 (never "
            "reached) and output v / (64 * scale)"
        ),
        "input_scale": qp.input_scale,
        "layers": layers,
        "report": dict(qp.report),
    }
    return {
        "fixed_point.json": write_json(folder / "fixed_point.json", spec),
        "fixed_point.safetensors": write_bytes(
            folder / "fixed_point.safetensors", st_save(tensors)
        ),
    }
