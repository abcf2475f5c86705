"""Energy counting and chip fit on graphs with branches, merges and a Delay (issue 13, part 5):
every edge's synapse is counted on what it reads, by the same rules (AC for spikes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nalln.conversion.nir_io import read_artefact
from nalln.conversion.plan import lower
from nalln.energy.plan_counting import count_plan
from nalln.ir.reference import delay_trace, run_plan

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "producers"
DAGS = ("nir_api_skip_merge", "nir_api_delay")


def _plan(name: str):
    with np.load(HERE / f"{name}.npz") as f:
        x, steps = torch.from_numpy(f["x"]), int(f["steps"])
    return lower(read_artefact(HERE / f"{name}.nir"), steps), x


def test_the_skip_synapse_counts_one_ac_per_spike_and_target():
    plan, x = _plan("nir_api_skip_merge")
    snn, ann, _ = count_plan(plan, x)
    spikes = run_plan(plan, x).spikes["lif1"]  # what 'skip' reads, every step
    skip = snn.layer("skip")
    n = x.shape[0]
    assert skip.role == "block" and skip.population == "if_out"
    assert float(skip.ac.sum()) / n == pytest.approx(float(spikes.sum()) * 4 / n)  # 4 targets
    assert float(skip.mac.sum()) == 0
    fc_a = snn.layer("fc_a")  # the same spikes through the other branch: 6 targets
    assert float(fc_a.ac.sum()) == pytest.approx(float(spikes.sum()) * 6)
    assert {L.name for L in ann.layers} == {"fc_in", "fc_a", "fc_b", "skip"}


def test_a_delayed_synapse_counts_the_spikes_that_arrive_in_the_window():
    plan, x = _plan("nir_api_delay")
    snn, _, _ = count_plan(plan, x)
    late = plan.stages[-1].synapse
    spikes = run_plan(plan, x).spikes["lif1"].double()
    arrived = delay_trace(spikes, late.delay)  # spikes delayed past the last step never arrive
    assert float(snn.layer("late").ac.sum()) == pytest.approx(float(arrived.sum()) * 4)
    assert float(arrived.sum()) < float(spikes.sum())
    assert float(snn.layer("now").ac.sum()) == pytest.approx(float(spikes.sum()) * 4)


@pytest.mark.parametrize("name", DAGS)
def test_energy_report_and_hardware_fit_run_on_a_graph(cli, name, tmp_path):
    out = tmp_path / "rep"
    code, _, err = cli(
        "energy",
        "report",
        str(HERE / f"{name}.nir"),
        "--inputs",
        str(HERE / f"{name}.npz"),
        "--targets",
        "loihi,asic45-int8",
        "--out",
        str(out),
        "-q",
    )
    assert code == 0, err
    assert (out / "energy_layers.csv").stat().st_size > 0
    code, stdout, err = cli("hardware", "fit", "--target", "loihi2", str(HERE / f"{name}.nir"))
    assert code == 0, err
    assert "fits" in stdout
    code, stdout, _ = cli(
        "hardware", "fit", "--target", "loihi2", str(HERE / f"{name}.nir"), "--json"
    )
    fit = json.loads(stdout)
    rows = {r["layer"]: r for r in fit["layers"]}
    if name == "nir_api_skip_merge":  # both edges' synapses into the IF: 6 + 8 inputs each
        assert rows["if_out"]["fan_in"] == 14 and rows["if_out"]["synapses"] == 4 * 14
        assert fit["neurons"] == 8 + 6 + 4
