"""Counting spikes, synaptic operations and MACs on the torch model, and pricing them per target.

``counting`` (hooks, NeuroBench rules) -> ``baseline`` (ReLU twin) -> ``cost_models`` (energy
per target; modes in ``modes``, ANN dataflow in ``dataflow``, chip static / routing / host I/O in
``chip_costs``) -> ``pricing`` / ``verdicts`` (matched SNN vs ANN comparisons with ranges) ->
``report`` / ``render`` (files); ``validation`` checks the chip model against measured silicon;
``demo.run_demo_step`` for ``nalln demo``.
"""

from nalln.energy.baseline import relu_twin
from nalln.energy.cost_models import BreakEven, Estimate, break_even, estimate
from nalln.energy.counting import NetworkCounts, OpCounter, count_model
from nalln.energy.modes import MODELS, Bound, CostModel, Dataflow, Precision
from nalln.energy.verdicts import Range, Verdict


def run_demo_step(run, data, out, progress: bool = False) -> dict:
    """Energy report for the demo run (see :func:`nalln.energy.demo.run_demo_step`)."""
    from nalln.energy.demo import run_demo_step as _run

    return _run(run, data, out, progress)


__all__ = [
    "MODELS",
    "Bound",
    "BreakEven",
    "CostModel",
    "Dataflow",
    "Estimate",
    "NetworkCounts",
    "OpCounter",
    "Precision",
    "Range",
    "Verdict",
    "break_even",
    "count_model",
    "estimate",
    "relu_twin",
    "run_demo_step",
]
