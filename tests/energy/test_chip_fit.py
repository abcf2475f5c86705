"""`fit`: cores from per-core limits, worked by hand on small layers."""

from __future__ import annotations

import numpy as np

from nalln.energy.chip_fit import _axons, fit_network
from nalln.energy.counting import NetworkCounts, Population, SynapticLayer
from nalln.hardware_targets.schema import KNOWN_CONSTANTS, Constant, Target


def _target(**values) -> Target:
    consts = {
        k: Constant(k, float(v), KNOWN_CONSTANTS[k].unit, "assumption", "test")
        for k, v in values.items()
    }
    return Target("chip", "chip", "neuromorphic", "", consts)


def _pw(cin=16, cout=32, hw=8) -> SynapticLayer:
    return SynapticLayer(
        "pw",
        "pointwise",
        "block",
        (cin, hw, hw),
        (cout, hw, hw),
        cin * cout,
        cin * cout,
        (1, 1),
        (1, 1),
        1,
        4,
        spike_input=True,
        population="lif",
    )


def _counts(L: SynapticLayer) -> NetworkCounts:
    P = Population("lif", "lif", L.out_shape, 4, L.name, np.zeros(4))
    return NetworkCounts("snn", 4, 1, [L], [P], [])


def test_neuron_limit() -> None:
    L = _pw()  # 32 * 8 * 8 = 2048 neurons
    res = fit_network(_counts(L), _target(neurons_per_core=256, cores_per_chip=4))
    row = res.layers[0]
    assert (row.per_core, row.cores, row.binding) == (256, 8, "neurons_per_core")
    assert res.chips() == 2 and res.feasible


def test_synapse_limit() -> None:
    L = _pw()  # fan-in 16 per neuron
    res = fit_network(_counts(L), _target(neurons_per_core=256, synapses_per_core=1024))
    row = res.layers[0]
    assert (row.per_core, row.cores, row.binding) == (64, 32, "synapses_per_core")


def test_fan_in_limit_and_infeasible() -> None:
    L = _pw()
    # a core with all 32 channels of a 2x2 tile reads 2*2*16 = 64 inputs
    assert _axons(L, 128) == 64
    res = fit_network(_counts(L), _target(neurons_per_core=256, fan_in_per_core=64))
    assert res.layers[0].per_core == 128 and res.layers[0].binding == "fan_in_per_core"
    res = fit_network(_counts(L), _target(neurons_per_core=256, fan_in_per_core=8))
    assert not res.feasible and "input axons" in res.layers[0].note
