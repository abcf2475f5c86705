r"""How a spiking population resets and how many spikes it sends per step: the choices where
producers' runtimes differ from NIR 1.0.8 (which resets to ``v_reset`` and sends one spike).

Each is an explicit choice, read from a node's metadata where a producer records it, otherwise
from a flag (``--reset``, ``--spikes``); the defaults are NIR's, so a graph that records
nothing runs exactly as before. With :math:`z` the spikes of a step (0/1, or a count) and
:math:`\beta = 1 - d_v` the membrane's retention:

* ``zero``: :math:`v \leftarrow 0` where :math:`z > 0` (NIR with ``v_reset = 0``, Lava's LIF,
  snnTorch ``reset_mechanism="zero"`` for ``Leaky``, Norse's ``reset_value``).
* ``subtract``: :math:`v \leftarrow v - z\vartheta` right after the spike, so the next step
  decays it (Sinabs ``MembraneSubtract``, Norse ``reset_subtract``).
* ``subtract-undecayed``: the next step subtracts :math:`z\vartheta` after its decay,
  :math:`v_{t+1} = \beta v_t + I_{t+1} - z_t\vartheta` (snnTorch ``reset_mechanism="subtract"``,
  its default, for ``Leaky``, ``Synaptic`` and their recurrent forms). Equal to
  :math:`v \leftarrow v - z\vartheta/\beta` at the spike; the same as ``subtract`` for an IF.

* a floor ``v_min`` (``None`` in NIR): :math:`v \leftarrow \max(v, v_{min})` after the reset
  (Sinabs's ``min_v_mem``; its ``from_nir`` sets ``-threshold`` for an IF).

* ``single``: :math:`z = [v > \vartheta]` (NIR).
* ``multi``: :math:`z = \lfloor v / \vartheta \rfloor` where :math:`v > 0`, else 0 (Sinabs's
  ``MultiSpike``, its default: several spikes per step, which a graded synapse weighs by count).
"""

from __future__ import annotations

from enum import StrEnum


class ResetRule(StrEnum):
    """What a spike does to the membrane (module docstring)."""

    ZERO = "zero"
    SUBTRACT = "subtract"
    SUBTRACT_UNDECAYED = "subtract-undecayed"


class SpikeMode(StrEnum):
    """How many spikes a neuron sends per step (module docstring)."""

    SINGLE = "single"
    MULTI = "multi"


def departures(reset: ResetRule, spikes: SpikeMode, v_min: float | None) -> str:
    """What a population does that NIR's (and Lava's LIF, netx's CUBA neuron) does not, as a
    phrase (``"resets by 'subtract' and sends several spikes per step"``); ``""``: NIR's."""
    what = [f"resets by {reset.value!r}"] if reset is not ResetRule.ZERO else []
    if spikes is SpikeMode.MULTI:
        what.append("sends several spikes per step")
    if v_min is not None:
        what.append(f"floors its membrane at v_min = {v_min:g}")
    return " and ".join(what)
