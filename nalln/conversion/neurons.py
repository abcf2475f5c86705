r"""NIR neuron nodes -> one :class:`~nalln.ir.plan.Neuron` population (exact algebra).

Every population nalln runs is Lava's LIF: per step :math:`u \leftarrow (1-d_u)u + a`,
:math:`v \leftarrow (1-d_v)v + u`, spike if :math:`v > \vartheta`, then :math:`v \leftarrow 0`,
where :math:`a = g (W s + b)` is the synapse's current times a gain ``g`` folded into its
weights. NIR 1.0.8's neurons, forward-Euler with the graph's time step ``dt``, map onto it so:

* ``LIF`` (:math:`\tau\dot v = (v_{leak} - v) + R I`):
  :math:`v \leftarrow (1 - \frac{dt}{\tau}) v + \frac{dt}{\tau} R I`, so
  :math:`d_u = 1`, :math:`d_v = dt/\tau`, :math:`g = R\,dt/\tau`.
* ``IF`` (:math:`\dot v = R I`): :math:`v \leftarrow v + R I` - one step is the unit of time
  (dt = 1), as Norse, Sinabs and snnTorch run it; :math:`d_u = 1`, :math:`d_v = 0`, :math:`g = R`.
  (With dt = 1e-4 the ODE read literally would scale every input by 1e-4.)
* ``CubaLIF`` (:math:`\tau_{syn}\dot I = -I + w_{in} S`, :math:`\tau_{mem}\dot v =
  (v_{leak} - v) + R I`): with :math:`\alpha = dt/\tau_{syn}`, :math:`\beta = dt/\tau_{mem}`,
  :math:`I \leftarrow (1-\alpha) I + \alpha w_{in} S` then
  :math:`v \leftarrow (1-\beta) v + \beta R I` (the new current, as Norse does). Writing
  :math:`u = \beta R I` gives :math:`d_u = \alpha`, :math:`d_v = \beta`,
  :math:`g = \alpha\beta R w_{in}`.
* ``Threshold`` (:math:`z = H(x - \vartheta)`, no state): :math:`d_u = d_v = 1`, :math:`g = 1`
  (the membrane is the input of this step only).

Lava and Loihi hold one decay, one threshold and one gain per population, so the parameters
must be uniform; ``v_leak`` and ``v_reset`` must be 0. The reset rule (NIR's: to zero) and the
spikes per step (NIR's: one) are the producer's semantics, read from node metadata ``reset`` /
``spikes`` (where the user's ``--reset`` / ``--spikes`` put them for producers that record
none, :mod:`nalln.conversion.semantics`) and carried on the population; a back-end that cannot
run a rule refuses it by name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import nir
import numpy as np

from nalln.conversion.nir_io import node_meta
from nalln.conversion.semantics import node_floor, node_semantics
from nalln.errors import NallnError
from nalln.ir.semantics import ResetRule, SpikeMode

NEURON_TYPES = (nir.LIF, nir.IF, nir.CubaLIF, nir.Threshold)


@dataclass(frozen=True)
class NeuronParams:
    """What one NIR neuron node contributes: decays, threshold and the input gain."""

    decay: float  # d_v
    current_decay: float  # d_u
    v_th: float
    gain: float
    reset: ResetRule = ResetRule.ZERO
    spikes: SpikeMode = SpikeMode.SINGLE
    v_min: float | None = None


def _uniform(values: Any, what: str, name: str, kind: str) -> float:
    v = np.asarray(values, dtype=np.float64)
    if v.size and not np.allclose(v, v.reshape(-1)[0], rtol=1e-9, atol=0):
        raise NallnError(
            f"{kind} node {name!r} has non-uniform {what}; Lava and Loihi hold one {what} per "
            "population (split the layer or make it uniform)"
        )
    return float(v.reshape(-1)[0])


def _zero(node: nir.NIRNode, name: str, kind: str, fields: tuple[str, ...]) -> None:
    for f in fields:
        value = getattr(node, f, None)
        if value is not None and np.any(np.asarray(value) != 0):
            raise NallnError(
                f"{kind} node {name!r} has {f} != 0; nalln's back-ends (like Lava's LIF) need "
                f"{f} = 0"
            )


def _with_semantics(p: NeuronParams, node, name: str, kind: str) -> NeuronParams:
    """``p`` with the node's reset rule and spike mode; one line for what cannot hold."""
    reset, spikes = node_semantics(node, name)
    if spikes is SpikeMode.MULTI and not p.v_th > 0:
        raise NallnError(
            f"{kind} node {name!r}: several spikes per step (--spikes multi) need a positive "
            f"threshold, it has {p.v_th:g}"
        )
    if reset is ResetRule.SUBTRACT_UNDECAYED and p.decay >= 1:
        raise NallnError(
            f"{kind} node {name!r} keeps no membrane (dt/tau = 1), so an undecayed subtraction "
            "cannot be carried to the next step; use --reset subtract or zero"
        )
    if reset is ResetRule.SUBTRACT_UNDECAYED and p.decay == 0:
        reset = ResetRule.SUBTRACT  # no decay (IF): the same rule
    v_min = node_floor(node, name)
    if v_min is not None and reset is ResetRule.SUBTRACT_UNDECAYED:
        raise NallnError(
            f"{kind} node {name!r}: a membrane floor (v_min) with snnTorch's undecayed "
            "subtraction is no producer's model; nalln runs v_min with --reset zero or subtract"
        )
    return replace(p, reset=reset, spikes=spikes, v_min=v_min)


def _fraction(value: float, what: str, name: str, kind: str, dt: float) -> float:
    if not 0 < value <= 1:
        raise NallnError(
            f"{kind} node {name!r}: dt/{what} = {value:.3g} must lie in (0, 1] (dt {dt:g} s); "
            "record the right dt in the node metadata or pass --dt SECONDS"
        )
    return value


def neuron_params(node: nir.NIRNode, name: str, dt: float) -> NeuronParams:
    """The population parameters of a NIR neuron node (module docstring) with its recorded
    semantics; one-line errors for what Lava's LIF cannot hold."""
    kind = type(node).__name__
    if isinstance(node, nir.Threshold):
        return NeuronParams(1.0, 1.0, _uniform(node.threshold, "threshold", name, kind), 1.0)
    return _with_semantics(_params(node, name, dt), node, name, kind)


def _params(node: nir.NIRNode, name: str, dt: float) -> NeuronParams:
    kind = type(node).__name__
    node_dt = float(node_meta(node).get("dt", dt))
    v_th = _uniform(node.v_threshold, "threshold", name, kind)
    if isinstance(node, nir.IF):
        _zero(node, name, kind, ("v_reset",))
        gain = _uniform(node.r, "input gain r", name, kind)
        return NeuronParams(0.0, 1.0, v_th, gain)
    _zero(node, name, kind, ("v_leak", "v_reset"))
    if isinstance(node, nir.LIF):
        tau = _uniform(node.tau, "time constant", name, kind)
        decay = _fraction(node_dt / tau, "tau", name, kind, node_dt)
        gain = _uniform(np.asarray(node.r, np.float64) * decay, "input gain r*dt/tau", name, kind)
        return NeuronParams(decay, 1.0, v_th, gain)
    if isinstance(node, nir.CubaLIF):
        alpha = node_dt / _uniform(node.tau_syn, "synaptic time constant", name, kind)
        beta = node_dt / _uniform(node.tau_mem, "membrane time constant", name, kind)
        _fraction(alpha, "tau_syn", name, kind, node_dt)
        _fraction(beta, "tau_mem", name, kind, node_dt)
        r_w = np.asarray(node.r, np.float64) * np.asarray(node.w_in, np.float64)
        gain = _uniform(r_w * alpha * beta, "input gain r*w_in*dt^2/(tau_syn*tau_mem)", name, kind)
        return NeuronParams(beta, alpha, v_th, gain)
    raise AssertionError(kind)  # pragma: no cover - callers pass NEURON_TYPES only


READOUT_TYPES = (nir.LI, nir.I)


def readout_params(node: nir.NIRNode, name: str, dt: float) -> tuple[float, float]:
    r"""(decay, gain) of a non-spiking readout: ``LI`` (:math:`\tau\dot v = (v_{leak} - v) +
    R I`) is :math:`v \leftarrow (1 - \frac{dt}{\tau}) v + \frac{dt}{\tau} R I`, so decay
    :math:`dt/\tau` and gain :math:`R\,dt/\tau`; ``I`` (:math:`\dot v = R I`) is
    :math:`v \leftarrow v + R I` (the step as unit of time, as for IF): decay 0, gain R."""
    kind = type(node).__name__
    if isinstance(node, nir.I):
        return 0.0, _uniform(node.r, "input gain r", name, kind)
    _zero(node, name, kind, ("v_leak",))
    node_dt = float(node_meta(node).get("dt", dt))
    decay = _fraction(
        node_dt / _uniform(node.tau, "time constant", name, kind), "tau", name, kind, node_dt
    )
    return decay, _uniform(
        np.asarray(node.r, np.float64) * decay, "input gain r*dt/tau", name, kind
    )


def parameter_shape(node: nir.NIRNode) -> tuple[int, ...]:
    """The shape of a neuron node's parameters (its population, or () for a scalar)."""
    values = node.threshold if isinstance(node, nir.Threshold) else node.v_threshold
    return tuple(np.asarray(values).shape)
