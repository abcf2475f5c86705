"""Counting spikes, synaptic operations and MACs on the torch model, and pricing them per target.

``counting`` (hooks, NeuroBench rules) -> ``baseline`` (ReLU twin) -> ``models`` (energy per
target) -> ``report`` / ``render`` (files); ``demo.run_demo_step`` for ``nalln demo``.
"""

from nalln.energy.baseline import relu_twin
from nalln.energy.cost_models import MODELS, BreakEven, Estimate, break_even, estimate
from nalln.energy.counting import NetworkCounts, OpCounter, count_model


def run_demo_step(run, data, out, progress: bool = False) -> dict:
    """Energy report for the demo run (see :func:`nalln.energy.demo.run_demo_step`)."""
    from nalln.energy.demo import run_demo_step as _run

    return _run(run, data, out, progress)


__all__ = [
    "MODELS",
    "BreakEven",
    "Estimate",
    "NetworkCounts",
    "OpCounter",
    "break_even",
    "count_model",
    "estimate",
    "relu_twin",
    "run_demo_step",
]
