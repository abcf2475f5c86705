"""Graphs other tools wrote, against those tools' own simulations (issue 13, parts 1 and 6).

Each fixture in tests/fixtures/producers/ is a ``.nir`` file a producer exported (snnTorch 1.0,
Norse 1.1, Sinabs 3.1 under nir 1.0.4, the nir 1.0.8 API) and an ``.npz`` with the inputs and
the producer's own output spikes per step (``make_fixtures.py``, ``make_sinabs.py``). Through
nalln's reference, Norse and Lava float they must reproduce those spikes exactly, with the
semantic choices ``fixtures.json`` names (``--reset``, ``--spikes``, ``--v-min``, ``--dt``: what
the producer ran but did not record) - and without them they must not, which shows each choice is
a real one.
"""

from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from nalln.conversion.nir_io import Artefact, read_artefact, read_graph
from nalln.conversion.norse_backend import NorseNetwork
from nalln.conversion.plan import lower
from nalln.conversion.semantics import Choices, record_choices
from nalln.conversion.simulate import simulate
from nalln.errors import NallnError
from nalln.ir.reference import run_plan
from nalln.ir.semantics import ResetRule, SpikeMode

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "producers"
LISTING: dict[str, dict] = json.loads((HERE / "fixtures.json").read_text())
NAMES = sorted(LISTING)
RECURRENT = ("nir_api_if_cubalif", "snntorch_rsynaptic")
LAVA = (
    "nir_api_delay",
    "nir_api_if_cubalif",
    "nir_api_skip_merge",
    "norse_events",
    "sinabs_iaf_single",
    "snntorch_conv_lif",
    "snntorch_lif_subtract",
    "snntorch_rsynaptic",
)


def load(name: str) -> tuple[torch.Tensor, np.ndarray, int]:
    with np.load(HERE / f"{name}.npz") as f:
        return torch.from_numpy(f["x"]), f["spikes"], int(f["steps"])


def choices(name: str, **drop: bool) -> Choices:
    sem = {k: v for k, v in LISTING[name]["semantics"].items() if not drop.get(k)}
    return Choices.parse(**sem)


def flags(name: str) -> list[str]:
    sem = LISTING[name]["semantics"].items()
    return [a for k, v in sem for a in (f"--{k.replace('_', '-')}", str(v))]


def reference_spikes(name: str, how: Choices) -> np.ndarray:
    x, _, steps = load(name)
    plan = lower(record_choices(read_artefact(HERE / f"{name}.nir"), how), steps)
    return run_plan(plan, x).outputs.transpose(0, 1).numpy()  # [N, T, K]


def test_fixtures_cover_four_producers_and_the_graphs_the_issue_names():
    producers = {e["producer"] for e in LISTING.values()}
    assert {"snnTorch", "Norse", "Sinabs", "nir API"} <= producers
    for name in NAMES:
        for ext in ("nir", "npz"):
            assert (HERE / f"{name}.{ext}").stat().st_size < 200_000
    nodes = {n: nir.read(HERE / f"{n}.nir", type_check=False).nodes.values() for n in NAMES}
    kinds = {n: {type(v) for v in vs} for n, vs in nodes.items()}
    assert any(nir.IF in k for k in kinds.values())
    assert all(nir.CubaLIF in kinds[n] for n in RECURRENT)  # recurrent CubaLIF, two producers
    assert nir.Conv2d in kinds["snntorch_conv_lif"] and nir.LIF in kinds["snntorch_conv_lif"]
    for name in ("norse_events", "sinabs_iaf_events"):  # event frames: [N, T, 2, H, W]
        x, _, steps = load(name)
        assert x.shape[1:3] == (steps, 2) and x.dim() == 5 and set(x.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("name", NAMES)
def test_reference_reproduces_the_producer_exactly(name):
    _, spikes, _ = load(name)
    got = reference_spikes(name, choices(name))
    assert spikes.sum() > 0 and (got == spikes).all(), f"{int((got != spikes).sum())} differ"


@pytest.mark.parametrize(
    "name", [n for n in NAMES if {"reset", "spikes", "v_min"} & set(LISTING[n]["semantics"])]
)
def test_nir_defaults_do_not_reproduce_a_producer_that_differs(name):
    """Without the flags (NIR's reset to zero, one spike per step, no floor) the spikes differ:
    the choice is real, and nalln would be silently wrong if it guessed."""
    _, spikes, _ = load(name)
    got = reference_spikes(name, choices(name, reset=True, spikes=True, v_min=True))
    assert (got != spikes).sum() > 0


def test_the_membrane_floor_is_a_choice_of_its_own():
    _, spikes, _ = load("sinabs_iaf_floor")
    assert (
        reference_spikes("sinabs_iaf_floor", choices("sinabs_iaf_floor", v_min=True)) != spikes
    ).sum() > 0


@pytest.mark.parametrize("name", ["snntorch_lif_subtract", "snntorch_rsynaptic"])
def test_snntorch_subtraction_is_undecayed(name):
    """snnTorch subtracts the threshold after the next step's decay; subtracting at the spike
    (Sinabs, Norse) is another model."""
    _, spikes, _ = load(name)
    assert (reference_spikes(name, Choices(reset=ResetRule.SUBTRACT)) != spikes).sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_norse_reproduces_the_producer_exactly(name, tmp_path):
    x, spikes, steps = load(name)
    simulate(
        HERE / f"{name}.nir",
        backend="norse",
        inputs=HERE / f"{name}.npz",
        steps=steps,
        out=tmp_path / "s",
        choices=choices(name),
        progress=False,
    )
    with np.load(tmp_path / "s" / "outputs.npz") as out:
        assert (out["backend"] == spikes).all() and (out["reference"] == spikes).all()


def _lava(name: str, out: Path, n: int = 2) -> np.ndarray:
    _, _, steps = load(name)
    simulate(
        HERE / f"{name}.nir",
        backend="lava",
        inputs=HERE / f"{name}.npz",
        steps=steps,
        n=n,
        out=out,
        choices=choices(name),
        progress=False,
    )
    with np.load(out / "outputs.npz") as f:
        return f["backend"]


@pytest.mark.parametrize("name", LAVA)
def test_lava_float_reproduces_the_producer_exactly(name, tmp_path):
    _, spikes, _ = load(name)
    got = _lava(name, tmp_path / "s")
    assert got.shape == spikes[:2].shape and (got == spikes[:2]).all()


@pytest.mark.parametrize(
    "name", ["nir_api_delay", "nir_api_if_cubalif", "nir_api_skip_merge", "norse_events"]
)
def test_loihi_fixed_point_agrees_on_zero_reset_producers(name, tmp_path):
    """The issue's bar (>= 0.97 spike agreement) on the emulator, calibrated on the fixture's
    own inputs (not a held-out figure; measured 1.0). snntorch_conv_lif measures 0.954 (docs)."""
    _, spikes, steps = load(name)
    res = simulate(
        HERE / f"{name}.nir",
        backend="loihi-emulator",
        inputs=HERE / f"{name}.npz",
        steps=steps,
        out=tmp_path / "s",
        choices=choices(name),
        progress=False,
    )
    assert res.metrics["spike_agreement"]["overall"] >= 0.97


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("sinabs_iaf_events", r"IF node '1' sends several spikes per step.*norse"),
        ("sinabs_iaf_floor", r"IF node '1' floors its membrane at v_min = -1; Lava's LIF"),
    ],
)
def test_lava_refuses_what_its_lif_cannot_do_by_name(name, says, tmp_path):
    with pytest.raises(NallnError, match=says):
        _lava(name, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_fixed_point_refuses_a_subtracting_reset_by_name(tmp_path):
    _, _, steps = load("sinabs_iaf_single")
    with pytest.raises(NallnError, match=r"resets by 'subtract'; nalln's Loihi fixed point"):
        simulate(
            HERE / "sinabs_iaf_single.nir",
            backend="loihi-emulator",
            inputs=HERE / "sinabs_iaf_single.npz",
            steps=steps,
            out=tmp_path / "s",
            choices=choices("sinabs_iaf_single"),
            progress=False,
        )
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("how", "says"),
    [
        (Choices(spikes=SpikeMode.MULTI), r"LIF node '1' sends several spikes per step"),
        (Choices(v_min=-1.0), r"LIF node '1' floors its membrane \(v_min\); Norse's LIF"),
    ],
)
def test_norse_refuses_what_its_lif_cells_cannot_do(how, says):
    art = record_choices(read_artefact(HERE / "snntorch_conv_lif.nir"), how)
    lower(art, 2)  # the reference runs it
    with pytest.raises(NallnError, match=says):
        NorseNetwork(art)


def test_cli_simulate_with_the_flags_matches_sinabs(run_cli, tmp_path):
    name = "sinabs_iaf_events"
    _, spikes, steps = load(name)
    out = tmp_path / "s"
    args = ["simulate", str(HERE / f"{name}.nir"), "--backend", "norse"]
    args += ["--inputs", str(HERE / f"{name}.npz"), "--out", str(out), "-q", *flags(name)]
    assert run_cli(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["spike_agreement"]["overall"] == 1.0
    rules = {(v["reset"], v["spikes"]) for v in report["semantics"]["neurons"].values()}
    assert rules == {("subtract", "multi")}
    assert "reset subtract, multi spikes per step" in (out / "report.md").read_text()
    with np.load(out / "outputs.npz") as f:
        assert (f["backend"] == spikes).all()


def test_convert_records_the_choices_in_the_graph(run_cli, tmp_path):
    """``convert --to nir`` writes the flags into node metadata: the written graph then runs as
    its producer did with no flags at all."""
    name = "snntorch_rsynaptic"
    out = tmp_path / "c"
    args = ["convert", str(HERE / f"{name}.nir"), "--to", "nir", "--out", str(out), "-q"]
    assert run_cli([*args, *flags(name)]) == 0
    graph = read_graph(out / "graph.nir")
    recorded = {
        k: n.metadata.get("reset") for k, n in graph.nodes.items() if isinstance(n, nir.CubaLIF)
    }
    assert recorded and set(recorded.values()) == {"subtract-undecayed"}
    x, spikes, steps = load(name)
    plan = lower(read_artefact(out / "graph.nir"), steps)
    assert (run_plan(plan, x).outputs.transpose(0, 1).numpy() == spikes).all()


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--reset", "zero"], "records reset 'subtract-undecayed' but --reset zero was given"),
        (["--dt", "1e-3"], "records dt 0.0001 s but --dt 0.001 was given"),
        (["--spikes", "multi"], "sends several spikes per step (--spikes multi); Norse's"),
    ],
)
def test_flags_that_contradict_the_graph_are_one_line(run_cli, tmp_path, capsys, extra, says):
    recorded = tmp_path / "rec"  # the rsynaptic graph with its choices and dt recorded
    args = ["convert", str(HERE / "snntorch_rsynaptic.nir"), "--to", "nir", "--out", str(recorded)]
    assert run_cli([*args, *flags("snntorch_rsynaptic"), "--dt", "1e-4", "-q"]) == 0
    capsys.readouterr()
    out = tmp_path / "s"
    code = run_cli(
        [
            "simulate",
            str(recorded / "graph.nir"),
            "--backend",
            "norse",
            "--inputs",
            str(HERE / "snntorch_rsynaptic.npz"),
            "--out",
            str(out),
            "-q",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and says in err, err
    assert err.startswith("nalln: error:") and err.count("\n") == 1
    assert not out.exists()


def test_convert_to_lava_runs_subtraction_in_float_only(run_cli, tmp_path, capsys):
    """The Lava plan names the subtracting LIF; netx (Loihi fixed point) is not written, with
    the reason; ``--fixed-point`` is refused before anything is written."""
    name = "sinabs_iaf_single"
    base = ["convert", str(HERE / f"{name}.nir"), "--to", "lava", "--steps", "8", "-q"]
    base += ["--inputs", str(HERE / f"{name}.npz"), *flags(name)]
    out = tmp_path / "c"
    assert run_cli([*base, "--out", str(out)]) == 0
    summary = json.loads((out / "convert.json").read_text())
    assert summary["netx"].startswith("not written:") and "resets by 'subtract'" in summary["netx"]
    stages = json.loads((out / "lava_plan.json").read_text())["stages"]
    assert {s["reset"] for s in stages} == {"subtract"}
    assert all("LIFResetSubtract" in s["neuron"] for s in stages)
    capsys.readouterr()
    fixed = tmp_path / "f"
    assert run_cli([*base, "--fixed-point", "--out", str(fixed)]) == 2
    assert "nalln's Loihi fixed point resets to zero" in capsys.readouterr().err
    assert not fixed.exists()


def test_semantics_flags_are_for_foreign_graphs_not_runs(run_cli, tiny_run, tmp_path, capsys):
    out = tmp_path / "s"
    code = run_cli(
        ["simulate", str(tiny_run), "--backend", "norse", "--reset", "subtract", "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--reset, --spikes, --v-min and --dt are for NIR graphs" in err
    assert err.count("\n") == 1 and not out.exists()


def test_a_neuron_flag_on_a_graph_without_resetting_neurons_is_one_line():
    nodes = {
        "input": nir.Input(input_type={"input": np.array([3])}),
        "fc": nir.Affine(weight=np.eye(2, 3), bias=np.zeros(2)),
        "thr": nir.Threshold(threshold=np.full(2, 0.5)),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [("input", "fc"), ("fc", "thr"), ("thr", "output")]
    art = Artefact([nir.NIRGraph(nodes, edges, type_check=False)], [], {})
    for how, flag in (
        (Choices(v_min=-1.0), "--v-min"),
        (Choices(reset=ResetRule.SUBTRACT), "--reset"),
    ):
        with pytest.raises(NallnError, match=f"^{flag} applies to LIF, IF and CubaLIF nodes"):
            record_choices(art, how)
    for bad in (dict(reset="half"), dict(spikes="many"), dict(dt=-1.0), dict(v_min=float("nan"))):
        with pytest.raises(NallnError, match="^(unknown --|--dt must|--v-min must)"):
            Choices.parse(**bad)
