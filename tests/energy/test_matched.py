"""Matched comparisons, the reuse-aware ANN, chip costs, ranges and the check against silicon."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nalln.energy.chip_costs import chip_costs, io_terms
from nalln.energy.chip_fit import fit_network
from nalln.energy.cost_models import estimate
from nalln.energy.counting import NetworkCounts, Population, SynapticLayer
from nalln.energy.dataflow import reuse_reads, weight_tiles
from nalln.energy.modes import Bound, CostModel, Dataflow, Precision
from nalln.energy.pricing import constants_used, price
from nalln.energy.report import Plan
from nalln.energy.validation import RATES, STEPS, kws_counts, validate
from nalln.hardware_targets import load_registry
from nalln.hardware_targets.registry import TargetRegistry
from tests.energy.test_cost_models import ASIC, CHIP, GPU, ann_counts, make_target, snn_counts

HOST = make_target(
    "host",
    "asic",
    e_add=1,
    e_mul=3,
    mem_pj_per_bit=0.0,
    mem_pj_offset=10,
    weight_bits=8,
    activation_bits=8,
    accumulator_bits=32,
    global_buffer=1000,
    e_io_bit=2,
    e_io_bit_high=4,
)
TIMED = make_target(
    "timed",
    "neuromorphic",
    e_synop=5,
    e_neuron_update=2,
    e_spike=1,
    p_static=0.5,
    t_step=1e-3,
    e_hop_ew=3,
    e_hop_ns=4,
    cores_per_chip=4,
    neurons_per_core=2,
)
REG = TargetRegistry({t.id: t for t in (ASIC, CHIP, GPU, HOST, TIMED)})


def _plan(*targets, baselines=(HOST,)) -> Plan:
    models = {t.id: ["dense"] if t.kind == "gpu" else ["ops", "ops+memory"] for t in targets}
    return Plan(
        REG, list(targets), models, {t.id: {} for t in targets}, HOST, HOST, list(baselines)
    )


def test_modes_are_types_that_read_as_strings() -> None:
    assert CostModel("ops+memory") is CostModel.OPS_MEMORY and CostModel.OPS_MEMORY.pays_memory
    assert not CostModel.OPS.pays_memory
    assert Precision.INT8.dense_key == "pj_per_op_int8" and Precision.INT4.dense_key is None
    assert f"{Dataflow.REUSE}" == "reuse"


def test_reuse_reads_by_hand() -> None:
    L = snn_counts().layers[0]  # in 1x3x3 (9 values), 9 weights, once per inference
    # 9 x 8 bits of inputs + 9 x 8 bits of weights = 144 bits in a 1000-bit buffer: one pass
    assert weight_tiles(L, HOST) == 1
    assert reuse_reads(L, HOST) == (9.0, 9.0)
    small = make_target("small", "asic", activation_bits=8, weight_bits=8, global_buffer=50)
    assert weight_tiles(L, small) == 3  # ceil(144 / 50): inputs re-read per weight tile
    assert reuse_reads(L, small) == (27.0, 9.0)


def test_reuse_dataflow_changes_only_analog_reads() -> None:
    ann = ann_counts()  # stem (100 dense MACs) and l1 (50 dense MACs), one step
    hi = estimate(ann, HOST, "ops+memory", REG, network="ann", dataflow=Dataflow.NO_REUSE)
    lo = estimate(ann, HOST, "ops+memory", REG, network="ann", dataflow=Dataflow.REUSE)
    assert hi.by_what()["memory: weight reads"] == 150 * 10  # one read per MAC, 10 pJ each
    assert lo.by_what()["memory: weight reads"] == (9 + 9) * 10  # each weight once
    assert lo.by_what()["memory: input reads"] == (9 + 9) * 10  # each input once
    assert hi.by_what()["MACs"] == lo.by_what()["MACs"]
    snn_lo = estimate(snn_counts(), HOST, "ops+memory", REG, dataflow=Dataflow.REUSE)
    snn_hi = estimate(snn_counts(), HOST, "ops+memory", REG)
    l1 = lambda e: sum(t.pj for t in e.terms if t.group == "l1")  # noqa: E731
    assert l1(snn_lo) == l1(snn_hi)  # an event-driven layer reads a weight per event anyway


def test_binary_input_analog_layer_priced_as_accumulates() -> None:
    counts = snn_counts()
    counts.layers[0].ac, counts.layers[0].mac = np.array([100.0, 0]), np.zeros(2)
    est = estimate(counts, HOST, "ops+memory", REG)
    kinds = est.by_what()
    assert kinds["accumulates (binary input)"] == 100 * 1 and "MACs" not in kinds


def test_chip_costs_by_hand() -> None:
    counts = snn_counts()
    fit = fit_network(counts, TIMED)  # p0: 4 neurons on 2 cores, p1: 4 neurons on 2 cores
    assert [r.cores for r in fit.layers] == [2, 2] and fit.chips() == 1
    low = chip_costs(counts, TIMED, TIMED, HOST, fit, Bound.LOW)
    kinds = {t.what: t.pj for t in low.terms}
    assert low.latency_s == pytest.approx(2 * 1e-3)  # T = 2 steps x 1 ms
    assert kinds["static power x latency (1 chip)"] == pytest.approx(0.5 * 2e-3 * 1e12)
    # p0 on cores 0,1 = (0,0),(1,0); l1's p1 on cores 2,3 = (0,1),(1,1) of a 2-wide mesh:
    # mean |dx| = 0.5, |dy| = 1 -> 0.5 x 3 + 1 x 4 pJ per message, p0's 5 spikes, 1 message each
    assert kinds["spike routing (hops)"] == pytest.approx(5 * (0.5 * 3 + 1 * 4))
    io = {t.what: t for t in io_terms(counts, TIMED, HOST, Bound.LOW)}
    # the stem current (4 values) once at 8 bits; the SE current out and back 2 x 4 x 2 steps
    assert io["host I/O: current into chip"].count == 4 * 1 * 8
    assert io["host I/O: SE current out and back"].count == 2 * 4 * 2 * 8
    hi = {t.what: t for t in io_terms(counts, TIMED, HOST, Bound.HIGH)}
    assert hi["host I/O: current into chip"].count == 4 * 2 * 32  # every step, 32 bits
    assert hi["host I/O: current into chip"].pj_each == 4


def test_verdicts_are_matched_and_ranged() -> None:
    plan = _plan(HOST, TIMED, GPU)
    targets, verdicts = price(snn_counts(), ann_counts(), plan)
    # a chip under 'ops' gets an estimate and no verdict
    assert "comparison" in targets["timed"]["models"]["ops"]
    assert not any(v["target"] == "timed" and v["model"] == "ops" for v in verdicts)
    # dense: one verdict per precision, the same precision on both sides
    dense = [v for v in verdicts if v["model"] == "dense"]
    assert {v["precision"] for v in dense} == {"fp32", "int8"}
    assert all(v["lower_bounds_only"] and v["snn_uj_high"] is None for v in dense)
    for v in verdicts:
        assert v["snn_uj_low"] <= (v["snn_uj_high"] or v["snn_uj_low"])
        assert v["ratio_low"] <= v["ratio_high"]
        assert v["outcome"] in ("SNN cheaper", "ANN cheaper", "undecided")
    chip = next(v for v in verdicts if v["target"] == "timed")
    assert chip["model"] == "ops+memory" and chip["baseline"] == "ANN on host"
    res = targets["timed"]["models"]["ops+memory"]
    assert res["snn_high"]["energy_pj"] > res["snn"]["energy_pj"]  # static, hops, I/O added
    # the ANN range: zero-skip with reuse (low) to dense without reuse (high)
    assert chip["baseline_uj_low"] * 1e6 == pytest.approx(res["ann_zero_skip_reuse"]["energy_pj"])
    assert chip["baseline_uj_high"] * 1e6 == pytest.approx(res["ann"]["energy_pj"])
    assert any("NOT a trained ANN" in n for n in res["ann_zero_skip_reuse"]["notes"])
    assert any("NOT a trained ANN" in n for n in chip["notes"])
    best = res["snn_low"]["energy_pj"] / res["ann_zero_skip_reuse"]["energy_pj"]
    assert chip["ratio_best"] == pytest.approx(best)
    assert chip["ratio_dear"] == pytest.approx(
        res["snn_high"]["energy_pj"] / res["ann"]["energy_pj"]
    )
    assert chip["ratio_low"] <= min(chip["ratio_best"], chip["ratio_dear"]) <= chip["ratio_high"]
    # the host's share of the SNN, and the break-even in synaptic events per nonzero weight:
    # l1's 30 events over its 9 weights, scaled by the same factor as the firing rate
    shares = sorted(res[k]["host_pj"] / res[k]["energy_pj"] for k in ("snn_low", "snn_high"))
    assert [chip["host_share_low"], chip["host_share_high"]] == pytest.approx(shares)
    assert 0 < shares[0] < 1
    assert chip["events_per_weight"] == pytest.approx(30 / 9)
    asic = next(v for v in verdicts if v["target"] == "host" and v["model"] == "ops")
    assert asic["break_even_rate_optimistic"] > 0 and asic["host_share_low"] is None
    ratio = asic["break_even_events_per_weight_optimistic"] / asic["break_even_rate_optimistic"]
    assert ratio == pytest.approx((30 / 9) / (7 / 16))  # both conventions scale together


def test_proxy_labels_only_borrowed_energy_constants() -> None:
    reg = load_registry()
    consts = constants_used(reg.get("loihi2"), reg)
    assert "proxy_from" not in consts["cores_per_chip"]  # Loihi 2's own value
    assert "fan_in_per_core" not in consts  # Loihi 1's structure is not Loihi 2's
    assert consts["e_synop"]["proxy_from"] == "loihi"


def _figure_forms(value: float, given: str) -> set[str]:
    forms = {f"{value:g}", re.sub(r"e-0(\d)", r"e-\1", f"{value:g}")}
    if value == int(value):
        forms |= {str(int(value)), f"{int(value):,}"}
    if given:
        forms.add(given.split()[0])
    return forms


def test_each_constant_status_fits_its_source() -> None:
    """published: the cited text states the figure; derived: it says so and how."""
    reg = load_registry()
    checked = 0
    for t in reg.targets.values():
        for key, c in t.constants.items():
            text = f"{c.source} {c.note}"
            if c.status == "published":
                pattern = "|".join(
                    rf"(?<![\d.]){re.escape(f)}(?!\d)" for f in _figure_forms(c.value, c.given)
                )
                assert re.search(pattern, text), (t.id, key, c.value, c.source)
            elif c.status == "derived":
                assert c.source.startswith("derived:"), (t.id, key)
                assert re.search(r"\d", c.source) and re.search(
                    r"[/x+^]|half|included|scal", c.source
                ), (t.id, key, c.source)
            checked += 1
    assert checked > 100


def test_validation_against_loihi_silicon_by_hand() -> None:
    rows = validate()
    assert [r.rate for r in rows] == list(RATES)
    for r in rows:
        synops = (390 + 256) * STEPS * r.rate * 256 + 256 * STEPS * r.rate * 29
        updates = (256 + 256 + 29) * STEPS
        spikes = (256 + 256) * STEPS * r.rate
        by_hand = (synops * 23.6 + updates * 81 + spikes * 1.7) * 1e-12
        assert r.estimate_j == pytest.approx(by_hand)
        assert r.measured_j == 0.00027 and r.ratio < 1  # the per-event model is a lower bound
    counts: NetworkCounts = kws_counts(0.1)
    assert [L.in_shape[0] for L in counts.layers] == [390, 256, 256]
    assert isinstance(counts.populations[0], Population)
    assert isinstance(counts.layers[0], SynapticLayer)
