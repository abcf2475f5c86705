r"""The Loihi fixed-point grid shared by fixed-point fine-tuning and conversion.

A :class:`FixedPointGrid` fixes, per layer, the integer grid the deployed network lives on:
weights ``w_int = round(w * weight_scale)`` (conv 8-bit; dense even values, as
:mod:`nalln.loihi.arithmetic` explains), biases ``round(b * scale)``, the threshold
mantissa ``vth`` and the current scale ``S`` (float current = ``a / S``); the stem also fixes the
input scale (``x_int = round(x * input_scale)``, ``S = input_scale * weight_scale``).

**Why the float model can equal its fixed-point image exactly.** Lava's LIF, for decay
``dv = 2048`` (tau = 2 steps), computes ``v = trunc(v / 2) + (a << 6) + (bias << 6)``. From rest
``v`` is a multiple of 64 after step 1 and of ``2**(7 - t)`` after step ``t``, so for
``T <= 7`` the truncation never loses a bit, and the membrane equals the float membrane times
``64 S`` exactly. The spike test ``v > vth << 6`` is then the float test ``v_float > v_th`` if
``S = (vth + 2**-T) / v_th``: the float threshold sits half a membrane step above ``vth << 6``,
where no reachable integer membrane lies, so no float rounding can fall on a tie. A float
network whose folded weights and biases lie on this grid (fixed-point fine-tuning bakes them
there) therefore spikes exactly as Loihi does, except where its *input* differs: the chip
receives the rounded image ``round(x * input_scale)``, and (hybrid SE) the side-car sends the
gated current rounded to an integer.

:func:`quant_plan_from_grid` builds the :class:`~nalln.loihi.quant_plan.QuantPlan` that
Lava and the emulator run from such a grid, checking that every weight and bias lies on it.
:func:`fixed_point_plan` is what ``convert`` and ``simulate`` call: the grid recorded in a
fine-tuned checkpoint if there is one, else the per-layer calibration.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from nalln.errors import NallnError
from nalln.ir.plan import Plan
from nalln.ir.reference import run_plan
from nalln.ir.se_mode import SEMode
from nalln.loihi.arithmetic import (
    BIAS_MAX,
    CONV_W,
    DECAY_UNITY,
    DENSE_W,
    VTH_MAX,
    lif_fixed,
    round_input,
    run_stage,
)
from nalln.loihi.calibration import GRAPH_RANGE, RUN_RANGE, calibrate
from nalln.loihi.emulator import agreement, check_overflow, emulate, gated
from nalln.loihi.onchip_se import (
    DEFAULT_LAG,
    OnchipScales,
    OnchipSE,
    choose_scales,
    gate_from_float,
)
from nalln.loihi.quant_plan import QStage, QuantPlan
from nalln.models.blocks import se_blocks
from nalln.models.naming import gated_stage
from nalln.run_meta import GRID_KEY, RunMeta

FORMAT = "nalln-fixed-point-grid/1"
META_KEY = GRID_KEY  # checkpoint metadata key of a fine-tuned model's grid
MAX_EXACT_STEPS = 7
ON_GRID_TOLERANCE = 1e-3  # |w * scale - round(w * scale)| of a baked weight (float32 rounding)


def threshold_offset(num_steps: int) -> float:
    """``S - vth`` (for ``v_th = 1``): half the membrane granularity after ``T`` steps."""
    return 2.0 ** -int(num_steps)


def check_exact_dynamics(num_steps: int, decay: float) -> None:
    """Refuse models whose Loihi membrane arithmetic cannot equal the float one."""
    dv = round(decay * DECAY_UNITY)
    if dv != DECAY_UNITY // 2 or not 1 <= num_steps <= MAX_EXACT_STEPS:
        raise NallnError(
            f"fixed-point fine-tuning needs tau = 2 steps (decay 0.5) and T <= {MAX_EXACT_STEPS}, "
            f"where Loihi's membrane arithmetic is exact; this model has decay {decay:g} and "
            f"T = {num_steps}"
        )


@dataclass(frozen=True)
class LayerGrid:
    """One layer's grid. ``name`` is the plan stage (NIR neuron node, or the readout synapse)."""

    name: str
    kind: str  # "conv" | "dense"
    weight_scale: float  # w_int = round(w * weight_scale) (dense: 2 * round(w * ws / 2))
    scale: float  # S: float current = a / S
    vth: int  # threshold mantissa; 0 for the readout
    clip_factor: float = 1.0  # weight_scale = clip_factor * max_int / max|w| at grid choice

    @property
    def w_range(self) -> tuple[int, int]:
        return CONV_W if self.kind == "conv" else DENSE_W

    @property
    def readout(self) -> bool:
        return self.vth == 0


@dataclass(frozen=True)
class FixedPointGrid:
    num_steps: int
    input_scale: float
    layers: tuple[LayerGrid, ...]
    se_mode: SEMode  # the SE mode fine-tuned for (0.1.0 grids said "none" for static)
    onchip: tuple[OnchipScales, ...] = ()  # SEMode.ONCHIP: each gate's integer scales

    def layer(self, name: str) -> LayerGrid:
        for g in self.layers:
            if g.name == name:
                return g
        raise KeyError(name)

    def onchip_scales(self, name: str) -> OnchipScales:
        for s in self.onchip:
            if s.name == name:
                return s
        raise NallnError(f"the fixed-point grid has no on-chip SE entry for layer {name!r}")

    def to_dict(self) -> dict[str, Any]:
        d = {
            "format": FORMAT,
            "num_steps": self.num_steps,
            "input_scale": self.input_scale,
            "se_mode": self.se_mode.value,
            "layers": [asdict(g) for g in self.layers],
        }
        if self.onchip:
            d["onchip_se"] = [s.to_dict() for s in self.onchip]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FixedPointGrid:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise NallnError(
                f"the checkpoint's fixed-point grid is not in format {FORMAT!r}; re-run "
                "`nalln finetune-fixed-point` with this version of nalln"
            )
        try:
            layers = tuple(
                LayerGrid(
                    str(g["name"]),
                    str(g["kind"]),
                    float(g["weight_scale"]),
                    float(g["scale"]),
                    int(g["vth"]),
                    float(g.get("clip_factor", 1.0)),
                )
                for g in d["layers"]
            )
            mode = SEMode(str(d["se_mode"]))
            onchip = tuple(OnchipScales.from_dict(s) for s in d.get("onchip_se", []))
            grid = cls(int(d["num_steps"]), float(d["input_scale"]), layers, mode, onchip)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise NallnError(f"the checkpoint's fixed-point grid is malformed ({exc})") from None
        for g in grid.layers:
            positive = all(math.isfinite(v) and v > 0 for v in (g.scale, g.weight_scale))
            if g.kind not in ("conv", "dense") or not positive:
                raise NallnError(f"fixed-point grid layer {g.name!r} is malformed")
            if not 0 <= g.vth <= VTH_MAX:
                raise NallnError(f"fixed-point grid layer {g.name!r}: vth {g.vth} out of range")
        return grid


def grid_from_quant_plan(qp: QuantPlan, se_mode: SEMode, lag: int = DEFAULT_LAG) -> FixedPointGrid:
    """A grid from a calibrated plan: keep each layer's weight resolution (clip factor) and move
    its scale to ``S = vth + 2**-T`` with an integer ``vth`` (``v_th`` must be 1, as in our
    models), so that the float threshold is exact on the grid. ``se_mode`` onchip: each gate's
    integer scales too (:func:`nalln.loihi.onchip_se.choose_scales`, gate ``lag``)."""
    T = qp.plan.num_steps
    off = threshold_offset(T)
    layers = []
    input_scale = qp.input_scale
    for k, q in enumerate(qp.stages):
        c = float(q.calibration.get("clip_factor", 1.0))
        if q.neuron is None:  # readout: no threshold, any scale
            layers.append(LayerGrid(q.name, q.kind, q.scale, q.scale, 0, c))
            continue
        if abs(q.neuron.v_th - 1.0) > 1e-12:
            raise NallnError(
                f"fixed-point fine-tuning needs v_threshold = 1; layer {q.name} has "
                f"{q.neuron.v_th:g}"
            )
        vth = int(max(1, round(q.scale)))
        S = vth + off
        if k == 0:  # stem: keep the weight scale, move the input scale
            alpha = q.scale / qp.input_scale
            input_scale = S / alpha
            layers.append(LayerGrid(q.name, q.kind, alpha, S, vth, c))
        else:
            layers.append(LayerGrid(q.name, q.kind, S, S, vth, c))
    onchip = ()
    if SEMode(se_mode) is SEMode.ONCHIP:
        by_name = {g.name: g for g in layers}
        onchip = tuple(
            choose_scales(
                q.name,
                by_name[q.name].scale,
                int(np.prod(q.out_shape[1:])),
                q.gate.w1,
                q.gate.w2,
                lag,
            )
            for q in qp.stages
            if q.gate is not None
        )
    return FixedPointGrid(T, float(input_scale), tuple(layers), SEMode(se_mode), onchip)


def _on_grid(values: np.ndarray, scale: float, even: bool, what: str) -> np.ndarray:
    step = 2.0 if even else 1.0
    v = np.asarray(values, np.float64) * scale / step
    r = np.rint(v)
    off = float(np.abs(v - r).max(initial=0.0))
    if off > ON_GRID_TOLERANCE:
        raise NallnError(
            f"{what} is not on the fixed-point grid recorded in the checkpoint (off by up to "
            f"{off:.3g} of a step): the model was changed after fine-tuning, or it is converted "
            "with another SE mode than it was fine-tuned for"
        )
    return (r * step).astype(np.int64)


def quant_plan_from_grid(plan: Plan, grid: FixedPointGrid) -> QuantPlan:
    """The fixed-point plan of ``plan`` on ``grid``: no search, every value checked on-grid."""
    names = [s.name for s in plan.stages]
    if names != [g.name for g in grid.layers]:
        raise NallnError(
            f"the recorded fixed-point grid has layers {[g.name for g in grid.layers]} but the "
            f"converted network has {names}; convert with the SE mode it was fine-tuned for "
            f"({grid.se_mode})"
        )
    if plan.num_steps != grid.num_steps:
        raise NallnError(
            f"the fixed-point grid was made for T = {grid.num_steps}, the network runs "
            f"T = {plan.num_steps}"
        )
    if grid.se_mode.gated and not any(st.gate is not None for st in plan.stages):
        raise NallnError(
            f"this checkpoint was fine-tuned for fixed point with {grid.se_mode} SE (the network "
            f"keeps its gates); convert or simulate it with --se {grid.se_mode}"
        )
    stages = []
    for stage, g in zip(plan.stages, grid.layers):
        s = stage.synapse
        if s.kind != g.kind:
            raise NallnError(f"layer {g.name}: grid kind {g.kind}, network kind {s.kind}")
        w = _on_grid(s.weight, g.weight_scale, g.kind == "dense", f"layer {g.name}'s weights")
        lo, hi = g.w_range
        if w.min(initial=0) < lo or w.max(initial=0) > hi:
            raise NallnError(f"layer {g.name}'s weights leave the 8-bit range [{lo}, {hi}]")
        b = _on_grid(s.bias, g.scale, False, f"layer {g.name}'s bias")
        if np.abs(b).max(initial=0) > BIAS_MAX:
            raise NallnError(f"layer {g.name}'s bias leaves the 13-bit range")
        neuron = stage.neuron
        onchip = None
        if grid.se_mode is SEMode.ONCHIP and stage.gate is not None:
            g_ = stage.gate
            onchip = gate_from_float(grid.onchip_scales(g.name), g_.w1, g_.b1, g_.w2, g_.b2)
        stages.append(
            QStage(
                stage,
                weight=w,
                bias=b,
                scale=g.scale,
                vth=g.vth if neuron is not None else 0,
                dv=int(round(neuron.decay * DECAY_UNITY)) if neuron is not None else 0,
                calibration={"clip_factor": g.clip_factor, "grid": "recorded"},
                onchip=onchip,
            )
        )
    return QuantPlan(plan, grid.input_scale, tuple(stages))


@torch.no_grad()
def _with_grid_report(qp: QuantPlan, x: torch.Tensor) -> QuantPlan:
    """Fill the per-layer report ``calibrate`` would: each layer alone on the float reference's
    input, and the whole fixed-point network, against the float plan on ``x``."""
    T = qp.plan.num_steps
    ref = run_plan(qp.plan, x, dtype=torch.float32)
    em = emulate(qp, x)
    check_overflow(em, "the calibration images")
    inp = round_input(x, qp.input_scale)[0]
    stages = []
    for k, q in enumerate(qp.stages):
        a = run_stage(q, inp, k == 0, T)
        if q.neuron is None:
            logits = ((a + torch.from_numpy(q.bias.astype(np.float64))) / q.scale).mean(0)
            top1 = float((logits.argmax(1) == ref.logits.argmax(1)).double().mean())
            stages.append(replace(q, calibration={**q.calibration, "top1_agreement_own": top1}))
            break
        if q.gate is not None:
            a = gated(q, a)[0]
        spk, _ = lif_fixed(a, q, None if q.gate is not None else q.bias, q.vth)
        calibration = {
            **q.calibration,
            "spike_agreement_own": agreement(spk, ref.spikes[q.name]),
            "spike_agreement_network": agreement(em.trace.spikes[q.name], ref.spikes[q.name]),
        }
        stages.append(replace(q, calibration=calibration))
        inp = ref.spikes[q.name]
    qp = replace(qp, stages=tuple(stages) + qp.stages[len(stages) :])
    report = {
        "calibration_images": int(x.shape[0]),
        "objective": "none: the grid recorded by fixed-point fine-tuning (checked, not searched)",
        "grid": "recorded in the checkpoint by `nalln finetune-fixed-point`",
        "top1_agreement_calibration": float(
            (em.trace.logits.argmax(1) == ref.logits.argmax(1)).double().mean()
        ),
        "layers": qp.table(),
    }
    return replace(qp, report=report)


def recorded_grid(meta: RunMeta | None) -> FixedPointGrid | None:
    """The grid a fine-tuned checkpoint records, or None for an ordinary checkpoint."""
    if meta is None or meta.fixed_point_grid is None:
        return None
    return FixedPointGrid.from_dict(dict(meta.fixed_point_grid))


def attach_gate_rounding(model: torch.nn.Module, grid: FixedPointGrid | None) -> None:
    """Give each SE block of a hybrid-SE fine-tuned model its layer's current scale, so that
    the float model rounds the gated current as the SE side-car does on the chip (and spikes
    as Loihi does); other models are left as they are."""
    if grid is not None and grid.se_mode is SEMode.ONCHIP:
        attach_onchip_gates(model, grid)
        return
    if grid is None or not grid.se_mode.side_car:
        return
    for name, m in se_blocks(model).items():
        if m.se_position == "current":
            key = gated_stage(name)
            try:
                m.se.current_scale = grid.layer(key).scale
            except KeyError:
                raise NallnError(
                    f"the checkpoint's fixed-point grid has no layer {key!r}"
                ) from None


def attach_onchip_gates(model: torch.nn.Module, grid: FixedPointGrid) -> None:
    """Replace each SE module of an on-chip-SE fine-tuned model by the on-chip gate
    (:class:`~nalln.loihi.onchip_se.OnchipSE`, same parameters), so the float model computes
    the chip's integer gate and spikes as Loihi does."""
    for name, m in se_blocks(model).items():
        if m.se_position != "current":
            raise NallnError(f"{name}: on-chip SE supports se_position='current' only")
        if not isinstance(m.se, OnchipSE):
            m.se = OnchipSE(m.se, grid.onchip_scales(gated_stage(name)), grid.num_steps)


def fixed_point_plan(
    plan: Plan, x: torch.Tensor, meta: RunMeta | None, progress: bool
) -> QuantPlan:
    """What ``convert``/``simulate`` deploy: the recorded grid of a fixed-point fine-tuned
    checkpoint (``meta``), else a per-layer calibration on ``x`` (a run's with the stem range
    its measured figures were made with, a foreign graph's with the membrane's headroom)."""
    grid = recorded_grid(meta)
    if grid is None:
        room = RUN_RANGE if meta is not None else GRAPH_RANGE
        return calibrate(plan, x, progress, stem_range=room)
    return _with_grid_report(quant_plan_from_grid(plan, grid), x)
