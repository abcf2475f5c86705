"""Energy models on hand-made counts: every total worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from nalln.energy.cost_models import availability, break_even, estimate
from nalln.energy.counting import ExtraOps, NetworkCounts, Population, SynapticLayer
from nalln.errors import NallnError
from nalln.hardware_targets.registry import TargetRegistry
from nalln.hardware_targets.schema import KNOWN_CONSTANTS, Constant, Target


def make_target(tid: str, kind: str, proxy: str | None = None, **values: float) -> Target:
    consts = {
        k: Constant(k, float(v), KNOWN_CONSTANTS[k].unit, "assumption", "test value")
        for k, v in values.items()
    }
    return Target(tid, tid, kind, "", consts, energy_proxy=proxy)


ASIC = make_target(
    "asic",
    "asic",
    e_add=1,
    e_mul=3,
    mem_pj_per_bit=0.0,
    mem_pj_offset=10,
    weight_bits=8,
    activation_bits=8,
    accumulator_bits=32,
)
CHIP = make_target("chip", "neuromorphic", e_synop=5, e_neuron_update=2, e_spike=1)
PROXY = make_target("chip2", "neuromorphic", proxy="chip", neurons_per_core=10)
OPS_ONLY = make_target("opsonly", "neuromorphic", e_synop=26)
GPU = make_target("gpu", "gpu", pj_per_flop_fp32=1.0, pj_per_op_int8=0.25)
REG = TargetRegistry({t.id: t for t in (ASIC, CHIP, PROXY, OPS_ONLY, GPU)})


def _layer(name, **kw) -> SynapticLayer:
    base = dict(
        kind="conv",
        role="block",
        in_shape=(1, 3, 3),
        out_shape=(1, 2, 2),
        weights=9,
        nonzero_weights=9,
        kernel=(3, 3),
        stride=(1, 1),
        groups=1,
        num_steps=2,
    )
    base.update(kw)
    return SynapticLayer(name=name, **base)


def snn_counts() -> NetworkCounts:
    stem = _layer(
        "stem.conv",
        role="stem",
        once=True,
        population="p0",
        mac=np.array([100.0, 0]),
        dense=np.array([100.0, 0]),
        in_nonzero=np.array([9.0, 0]),
        calls_analog=1,
    )
    l1 = _layer(
        "l1",
        spike_input=True,
        population="p1",
        ac=np.array([10.0, 20.0]),
        dense=np.array([50.0, 50.0]),
        in_nonzero=np.array([2.0, 3.0]),
        calls_binary=1,
    )
    pops = [
        Population("p0", "lif", (1, 2, 2), 2, "stem.conv", np.array([2.0, 3.0])),
        Population("p1", "lif", (1, 2, 2), 2, "l1", np.array([1.0, 1.0])),
    ]
    extras = [ExtraOps("l1.se", "se_gate", 4, 2, False, adds=8.0, muls=8.0)]
    return NetworkCounts("snn", 2, 1, [stem, l1], pops, extras)


def ann_counts() -> NetworkCounts:
    stem = _layer(
        "stem.conv",
        role="stem",
        num_steps=1,
        population="p0",
        mac=np.array([90.0]),
        dense=np.array([100.0]),
        calls_analog=1,
    )
    l1 = _layer(
        "l1",
        num_steps=1,
        population="p1",
        mac=np.array([30.0]),
        dense=np.array([50.0]),
        calls_analog=1,
    )
    pops = [
        Population("p0", "relu", (1, 2, 2), 1, "stem.conv", np.array([3.0])),
        Population("p1", "relu", (1, 2, 2), 1, "l1", np.array([2.0])),
    ]
    extras = [ExtraOps("l1.se", "se_gate", 4, 1, False, adds=4.0, muls=4.0)]
    return NetworkCounts("ann", 1, 1, [stem, l1], pops, extras)


def test_ops_asic_by_hand() -> None:
    snn = estimate(snn_counts(), ASIC, "ops", REG)
    # ACs 30 x 1 + stem MACs 100 x (1 + 3) + pooling 8 x 1 + gate 8 x 3
    assert snn.total_pj == 30 + 400 + 8 + 24
    assert snn.variable_pj == 30  # only the spike-driven ACs scale with activity
    ann = estimate(ann_counts(), ASIC, "ops", REG, network="ann")
    assert ann.total_pj == 150 * 4 + 4 + 12
    skip = estimate(ann_counts(), ASIC, "ops", REG, network="ann-zero-skip")
    assert skip.total_pj == 120 * 4 + 4 + 12


def test_break_even_by_hand() -> None:
    counts = snn_counts()
    rate = counts.totals["firing_rate"]
    assert rate == pytest.approx(7 / 16)
    be = break_even(
        estimate(counts, ASIC, "ops", REG),
        estimate(ann_counts(), ASIC, "ops", REG, network="ann"),
        rate,
    )
    assert be.scale == pytest.approx((616 - 432) / 30)
    assert be.rate == pytest.approx((616 - 432) / 30 * 7 / 16)
    assert be.snn_wins and "cheaper" in be.verdict()
    dearer = break_even(
        estimate(counts, ASIC, "ops", REG),
        estimate(ann_counts(), GPU, "dense", REG, network="ann", precision="int8"),
        rate,
    )
    assert not dearer.snn_wins and dearer.rate == 0 and "no firing rate" in dearer.verdict()


def test_neuromorphic_ops_and_events_by_hand() -> None:
    ops = estimate(snn_counts(), CHIP, "ops", REG, host=ASIC)
    assert ops.total_pj == 30 * 5 + 400 + 8 + 24
    assert ops.off_chip_pj() == 400 + 8 + 24 and any("host" in n for n in ops.notes)
    ev = estimate(snn_counts(), CHIP, "ops+memory", REG, host=ASIC)
    kinds = ev.by_what()
    assert kinds["synaptic events"] == 30 * 5
    assert kinds["neuron updates"] == (4 + 4) * 2 * 2  # every neuron, every step
    assert kinds["spikes sent"] == 7 * 1
    assert all(t.on == "asic" for t in ev.terms if t.group == "stem.conv" and "MAC" in t.what)


def test_lemaire_event_layer_by_hand() -> None:
    est = estimate(snn_counts(), ASIC, "ops+memory", REG)
    l1 = [t for t in est.terms if t.group == "l1"]
    count = {}
    for t in l1:
        count[t.what] = count.get(t.what, 0.0) + t.count
    assert count["synaptic accumulates"] == 30
    assert count["memory: weight reads"] == 30  # one weight read per synaptic event
    assert count["memory: potential reads"] == 30 + 8  # per event + every neuron every step
    assert count["memory: input spike reads"] == 5  # theta_in
    assert count["leak multiplies"] == 8
    assert count["reset on spike"] == 2  # theta_out
    assert count["address arithmetic"] == 2 * 5 + 5 * 9  # 2 theta_in + theta_in * Hk * Wk
    weight_read = next(t for t in l1 if t.what == "memory: weight reads")
    assert weight_read.pj_each == 10  # mem_pj_per_bit 0 -> offset only


def test_dense_gpu_by_hand() -> None:
    snn = estimate(snn_counts(), GPU, "dense", REG)
    assert snn.total_pj == 2 * 200 + 4 * 8 * 2 + 16  # MACs, LIF updates, pool + gate
    ann = estimate(ann_counts(), GPU, "dense", REG, network="ann", precision="int8")
    assert ann.total_pj == pytest.approx((2 * 150 + 8 + 8) * 0.25)
    assert snn.variable_pj == 0 and "lower bound" in snn.notes[0]


def test_proxy_is_labelled() -> None:
    est = estimate(snn_counts(), PROXY, "ops", REG, host=ASIC)
    assert est.proxy == "chip" and "PROXY" in est.notes[0]
    assert est.total_pj == estimate(snn_counts(), CHIP, "ops", REG, host=ASIC).total_pj


def test_missing_constant_names_the_model() -> None:
    reason = availability(OPS_ONLY, "ops+memory", REG)
    assert "opsonly" in reason and "e_neuron_update" in reason and "ops+memory" in reason
    with pytest.raises(NallnError, match="ops\\+memory"):
        estimate(snn_counts(), OPS_ONLY, "ops+memory", REG, host=ASIC)
    with pytest.raises(NallnError, match="pj_per_flop_fp16"):
        estimate(snn_counts(), GPU, "dense", REG, precision="fp16")
    assert "does not apply" in availability(GPU, "ops", REG)
