"""`nalln energy report GRAPH.nir --inputs X.npz` and `nalln hardware fit ... GRAPH.nir`, end to
end through ``nalln.cli.main`` on small graphs another tool might have written."""

from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from nalln.conversion.nir_io import Artefact
from nalln.conversion.plan import lower
from nalln.energy.plan_counting import count_plan

TARGETS = "loihi,loihi2,asic45-int8,gpu-t4"


@pytest.fixture
def pooled_nir(graphs, tmp_path: Path) -> Path:
    path = tmp_path / "pooled.nir"
    nir.write(path, graphs.pooled())
    return path


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_report_on_a_foreign_graph(cli, graphs, pooled_nir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((5, 1, 4, 4)).astype(np.float32)
    xs = _npz(tmp_path / "x.npz", x=x, y=np.array([0, 1, 2, 0, 1]))
    out = tmp_path / "rep"
    code, stdout, err = cli(
        "energy",
        "report",
        str(pooled_nir),
        "--inputs",
        str(xs),
        "--targets",
        TARGETS,
        "--out",
        str(out),
        "-q",
    )
    assert code == 0, err
    for f in (
        "energy.json",
        "energy.md",
        "energy_layers.csv",
        "energy_summary.csv",
        "energy_per_step.csv",
        "energy_headline.png",
        "firing_rate.png",
    ):
        assert (out / f).stat().st_size > 0, f
    import pandas as pd

    csv = pd.read_csv(out / "energy_layers.csv").set_index("name")
    assert csv.loc["fc", "folded_pool"] == "pool" and csv.loc["fc", "counted_as"] == "AC"
    rep = json.loads((out / "energy.json").read_text())
    src = rep["source"]
    assert src["kind"] == "nir-graph" and src["written_by"].startswith("another tool")
    assert src["n_inputs"] == 5 and src["drive"] == "held" and src["num_steps"] == 5
    assert src["accuracy"]["value"] is not None and "y of --inputs" in src["accuracy"]["note"]
    assert rep["synthetic"] is False and rep["synthetic_model"] is False
    # the same counts as the counter on the plan, per inference
    snn, _, _ = count_plan(
        lower(Artefact([graphs.pooled()], [], {"num_steps": 5})), torch.from_numpy(x)
    )
    layers = {r["name"]: r for r in rep["snn"]["layers"]}
    assert layers["conv"]["computed"] == "once per inference"
    assert layers["conv"]["input"] == "analog"
    assert layers["fc"]["folded_pool"] == "pool" and layers["fc"]["counted_as"] == "AC"
    assert layers["fc"]["synaptic_acs"] == pytest.approx(snn.layer("fc").ac.sum() / 5)
    assert rep["snn"]["totals"]["spikes"] == pytest.approx(snn.totals["spikes"])
    assert "folded_pooling" in rep["rules"] and "stem" not in rep["rules"]
    assert any("Pooling 'pool' was folded into 'fc'" in c for c in rep["caveats"])
    assert {v["target"] for v in rep["summary"]} >= {"loihi", "asic45-int8", "gpu-t4"}
    md = (out / "energy.md").read_text()
    assert "NIR graph" in md and "SYNTHETIC" not in md and "forward hooks" not in md
    assert "accuracy: 0." in md or "accuracy: 1." in md
    assert "pooled.nir" in stdout and "counted on 5 inputs" in stdout


def test_report_on_events_and_a_recurrent_graph(cli, graphs, tmp_path: Path) -> None:
    path = tmp_path / "rnn.nir"
    nir.write(path, graphs.recurrent())
    rng = np.random.default_rng(1)
    xs = _npz(tmp_path / "ev.npz", x=(rng.random((4, 6, 5)) < 0.4).astype(np.float32))
    out = tmp_path / "rep"
    code, _, err = cli(
        "energy",
        "report",
        str(path),
        "--inputs",
        str(xs),
        "--targets",
        "loihi,asic45-int8",
        "--out",
        str(out),
        "--json",
    )
    assert code == 0, err
    rep = json.loads((out / "energy.json").read_text())
    assert rep["source"]["drive"] == "per-step" and rep["source"]["num_steps"] == 6
    assert rep["source"]["accuracy"]["value"] is None  # no y
    layers = {r["name"]: r for r in rep["snn"]["layers"]}
    assert layers["fc_in"]["counted_as"] == "AC"  # 0/1 events
    assert layers["fc_in"]["computed"].startswith("every step")
    assert layers["w_rec"]["role"] == "recurrent" and layers["w_rec"]["ann_dense_macs"] is None
    assert layers["w_rec"]["per_step"]["dense_ops"][0] == 0
    assert any("Recurrent synapse w_rec" in c for c in rep["caveats"])
    assert any("0 or 1 (events)" in c for c in rep["caveats"])
    loihi = rep["targets"]["loihi"]["models"]["ops+memory"]
    assert loihi["fit"]["cores"] >= 2


def test_our_export_is_labelled_as_ours(cli, tmp_path: Path) -> None:
    from nalln.conversion.export import export_model
    from nalln.conversion.nir_io import write_artefact
    from nalln.models.registry import create

    torch.manual_seed(0)
    model = create(
        "neurallnet",
        image_size=32,
        width_multiplier=0.25,
        head_hidden=16,
        refine_channels=64,
        use_se=False,
    ).eval()
    write_artefact(tmp_path / "g", export_model(model, meta={"synthetic": True}))
    xs = _npz(
        tmp_path / "x.npz",
        x=np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32),
    )
    code, stdout, err = cli(
        "energy",
        "report",
        str(tmp_path / "g"),
        "--inputs",
        str(xs),
        "--targets",
        "asic45-int8",
        "--out",
        str(tmp_path / "rep"),
    )
    assert code == 0, err
    rep = json.loads((tmp_path / "rep" / "energy.json").read_text())
    assert rep["source"]["written_by"].startswith("nalln's exporter")
    # the model learnt from synthetic images; the inputs are not called synthetic
    assert rep["synthetic"] is False and rep["synthetic_model"] is True
    assert "MODEL TRAINED ON SYNTHETIC DATA" in stdout
    assert rep["source"]["num_steps"] == 4  # recorded in the graph


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_inputs", "pass --inputs X.npz"),
        ("no_steps", "pass --steps T"),
        ("unlowerable", "records reset 'to_threshold', which nalln does not know"),
        ("inputs_with_run", "--inputs and --steps are for NIR graphs"),
        ("data_with_graph", "--data is for runs"),
        ("bad_shape", "do not fit the graph's input"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    cli, graphs, tmp_path: Path, case: str, message: str
) -> None:
    g = graphs.two_layer()
    g.metadata = {}  # T unknown
    if case == "unlowerable":
        g.nodes["if1"].metadata = {"reset": "to_threshold"}  # subtract is a choice now
    path = tmp_path / "g.nir"
    nir.write(path, g)
    xs = _npz(tmp_path / "x.npz", x=np.ones((2, 3 if case != "bad_shape" else 4), np.float32))
    args = [str(path), "--inputs", str(xs), "--steps", "3"]
    if case == "no_inputs":
        args = [str(path), "--steps", "3"]
    elif case == "no_steps":
        args = [str(path), "--inputs", str(xs)]
    elif case == "inputs_with_run":
        (tmp_path / "run").mkdir()
        args = [str(tmp_path / "run"), "--inputs", str(xs)]
    elif case == "data_with_graph":
        args += ["--data", str(tmp_path)]
    out = tmp_path / "rep"
    code, stdout, err = cli(
        "energy", "report", *args, "--targets", "asic45-int8", "--out", str(out)
    )
    assert code == 2, (stdout, err)
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_hardware_fit_on_a_graph(cli, graphs, pooled_nir: Path, tmp_path: Path) -> None:
    code, stdout, err = cli("hardware", "fit", "--target", "loihi2", str(pooled_nir))
    assert code == 0, err
    assert "NIR graph pooled.nir" in stdout and "fits" in stdout
    code, stdout, _ = cli("hardware", "fit", "--target", "loihi2", str(pooled_nir), "--json")
    fit = json.loads(stdout)
    rows = {r["layer"]: r for r in fit["layers"]}
    # lif1 is fed by the host (its conv reads the graph's input); fc is folded over the 2x4x4
    # map: 32 synapses per neuron; no fan-in limit on loihi2
    assert rows["lif1"]["input"].startswith("host") and rows["lif1"]["neurons"] == 32
    assert rows["lif2"]["fan_in"] == 32 and rows["lif2"]["synapses"] == 96
    assert fit["neurons"] == 35 and fit["cores"] == 2 and fit["chips"] == 1
    # a graph that does not record T fits without it (T does not change the placement)
    g = graphs.two_layer()
    g.metadata = {}
    nir.write(tmp_path / "t.nir", g)
    code, stdout, err = cli("hardware", "fit", "--target", "loihi", str(tmp_path / "t.nir"))
    assert code == 0, err
    # the recurrent synapses are stored with their population
    nir.write(tmp_path / "rnn.nir", graphs.recurrent())
    code, stdout, _ = cli(
        "hardware", "fit", "--target", "loihi", str(tmp_path / "rnn.nir"), "--json"
    )
    cell = next(r for r in json.loads(stdout)["layers"] if r["layer"] == "cell")
    assert cell["fan_in"] == 6
    bad = graphs.two_layer()
    bad.nodes["if1"].metadata = {"reset": "to_threshold"}  # a rule nalln does not know
    nir.write(tmp_path / "bad.nir", bad)
    code, _, err = cli("hardware", "fit", "--target", "loihi", str(tmp_path / "bad.nir"))
    assert code == 2 and "to_threshold" in err and len(err.strip().splitlines()) == 1
