"""Graphs other tools wrote, against those tools' own simulations (issue 13, parts 1 and 6).

Each fixture in tests/fixtures/producers/ is a ``.nir`` file a producer exported (snnTorch 1.0,
Norse 1.1, Sinabs 3.1 under nir 1.0.4, the nir 1.0.8 API) and an ``.npz`` with the inputs and
the producer's own output spikes per step (``make_fixtures.py``, ``make_sinabs.py``). Through
nalln's reference, Norse and Lava float they must reproduce those spikes exactly, with the
semantic choices ``fixtures.json`` names (``--reset``, ``--spikes``, ``--v-min``, ``--dt``: what
the producer ran but did not record) - and without them they must not, which shows each choice is
a real one. Loihi fixed point (the emulator, Lava ``fixed_pt``) runs the same semantics in
integers: >= 0.97 spike agreement on the fixtures, and Lava bit-exact with the emulator.
"""

from __future__ import annotations

import itertools
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
# a producer's semantics that NIR (and Lava's LIF, netx) lack: reset, spikes per step, a floor
SEMANTIC = [n for n in NAMES if {"reset", "spikes", "v_min"} & set(LISTING[n]["semantics"])]


def load(name: str) -> tuple[torch.Tensor, np.ndarray, int]:
    """Inputs, the producer's output per step (spikes, or a graded readout's membrane) and T."""
    with np.load(HERE / f"{name}.npz") as f:
        out = f["outputs"] if "outputs" in f else f["spikes"]
        return torch.from_numpy(f["x"]), out, int(f["steps"])


def same(name: str, got: np.ndarray, want: np.ndarray) -> bool:
    """Spikes: every entry equal. A graded readout (an LI membrane the producer computed in
    float32): equal to float32 rounding, 1e-5 of its largest value."""
    if LISTING[name].get("output") != "membrane":
        return got.shape == want.shape and bool((got == want).all())
    peak = float(np.abs(want).max())
    return got.shape == want.shape and float(np.abs(got - want).max()) <= 1e-5 * peak


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
    assert np.abs(spikes).sum() > 0 and same(name, got, spikes), f"{(got != spikes).sum()} differ"


@pytest.mark.parametrize("name", SEMANTIC)
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
        assert same(name, out["backend"], spikes) and same(name, out["reference"], spikes)


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


@pytest.mark.parametrize("name", NAMES)
def test_lava_float_reproduces_the_producer_exactly(name, tmp_path):
    """Every fixture, the multi-spike and floored Sinabs ones included (``ProgrammableLIF``:
    graded spike counts into a 24-bit synapse, the floor after the reset)."""
    _, spikes, _ = load(name)
    got = _lava(name, tmp_path / "s")
    assert same(name, got, spikes[:2])
    if LISTING[name]["semantics"].get("spikes") == "multi":
        assert got.max() > 1  # counts, not 0/1


@pytest.mark.parametrize("name", NAMES)
def test_loihi_fixed_point_agrees_with_the_producers(name, tmp_path):
    """The issue's bar (>= 0.97 spike agreement) on the emulator, calibrated on the fixture's
    own inputs (not a held-out figure; measured per fixture in docs/conversion.md), for every
    reset rule, spike mode and floor the fixtures need (held out: test_fixed_point_producers.py)."""
    assert _emulated(name, tmp_path / "s")["spike_agreement"]["overall"] >= 0.97


def _emulated(name: str, out: Path) -> dict:
    """The metrics of ``simulate --backend loihi-emulator`` on the fixture's inputs."""
    _, _, steps = load(name)
    return simulate(
        HERE / f"{name}.nir",
        backend="loihi-emulator",
        inputs=HERE / f"{name}.npz",
        steps=steps,
        out=out,
        choices=choices(name),
        progress=False,
    ).metrics


@pytest.mark.parametrize("name", ["nir_api_conv1d", "norse_li_readout"])
def test_loihi_fixed_point_agrees_on_the_conv1d_and_li_readout_producers(name, tmp_path):
    """Emulator against the float reference, calibrated on the fixture's 4 inputs (not held
    out): every layer's spikes >= 0.97 (measured 0.9987-1.0), top-1 of the time-averaged output
    equal; Norse's LI membrane within 1 % of its largest value per step (measured 0.35 %)."""
    m = _emulated(name, tmp_path / "s")
    assert min(m["spike_agreement"]["per_layer"].values()) >= 0.97
    assert m["top1_agreement"] == 1.0 and not m["fixed_point"]["overflows"]
    if LISTING[name].get("output") == "membrane":
        assert m["graded_output"]["max_relative_difference_per_step"] < 0.01


@pytest.mark.lava
@pytest.mark.parametrize("name", SEMANTIC)
def test_lava_fixed_point_agrees_with_the_producers(name, tmp_path):
    """Lava ``fixed_pt`` (``ProgrammableLIF``'s bit-accurate model) on the fixtures that
    subtract, send counts or floor the membrane: >= 0.97, and spike for spike the emulator's
    run of the same fixed-point plan."""
    _, _, steps = load(name)
    res = simulate(
        HERE / f"{name}.nir",
        backend="lava",
        fixed_point=True,
        inputs=HERE / f"{name}.npz",
        steps=steps,
        n=2,
        out=tmp_path / "s",
        choices=choices(name),
        progress=False,
    )
    assert res.metrics["spike_agreement"]["overall"] >= 0.97
    assert res.metrics["fixed_point"]["lava_matches_emulator_bit_exactly"]


def tiny_graph(kind: str, seed: int = 0) -> nir.NIRGraph:
    """Input [5] -> Affine -> LIF/IF [6] -> Affine -> LIF/IF [3] -> Output, bias on the first."""
    rng = np.random.default_rng(seed)

    def neuron(n: int) -> nir.NIRNode:
        full = lambda v: np.full(n, v, np.float64)  # noqa: E731
        if kind == "IF":
            return nir.IF(r=full(1.0), v_threshold=full(0.5))
        return nir.LIF(
            tau=full(4e-4),
            r=full(1.0),
            v_leak=full(0),
            v_threshold=full(0.5),
            metadata={"dt": 1e-4},
        )

    nodes = {
        "input": nir.Input(input_type={"input": np.array([5])}),
        "fc1": nir.Affine(weight=rng.normal(0, 1.2, (6, 5)), bias=rng.normal(0, 0.1, 6)),
        "n1": neuron(6),
        "fc2": nir.Affine(weight=rng.normal(0, 0.6, (3, 6)), bias=np.zeros(3)),
        "n2": neuron(3),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    names = list(nodes)
    return nir.NIRGraph(nodes, list(itertools.pairwise(names)), type_check=False)


@pytest.mark.parametrize(
    "how",
    [
        Choices(spikes=SpikeMode.MULTI),
        Choices(reset=ResetRule.SUBTRACT),
        Choices(reset=ResetRule.SUBTRACT, spikes=SpikeMode.MULTI, v_min=-0.5),
        Choices(v_min=-0.25),
    ],
    ids=["multi-zero", "subtract", "multi-subtract-floor", "zero-floor"],
)
def test_integer_neuron_equals_the_reference_where_both_are_exact(how):
    """An IF network whose every value is exact in both (weights in quarters, integer inputs,
    scale 8: the membrane is ``512 v`` in integers, the threshold ``4 << 6``): the emulator's
    spikes and counts equal the float reference's, step for step, for each rule."""
    from dataclasses import replace

    from nalln.loihi.emulator import emulate
    from nalln.loihi.quant_plan import QStage, QuantPlan

    plan = lower(record_choices(Artefact([tiny_graph("IF")], [], {}), how), 8)
    stages = []
    for st in plan.stages:  # weights on a grid of 1/4 (dense integers on scale 8 are even)
        syn = replace(st.synapse, weight=np.round(st.synapse.weight * 4) / 4)
        stages.append(replace(st, synapse=replace(syn, bias=np.round(syn.bias * 8) / 8)))
    plan = replace(plan, stages=stages)
    vmin = None if how.v_min is None else int(how.v_min * 8)
    qp = QuantPlan(
        plan,
        1.0,
        tuple(
            QStage(st, (st.synapse.weight * 8).astype(np.int64), (st.synapse.bias * 8).astype(
                np.int64), 8.0, vth=4, dv=0, vmin=vmin)
            for st in plan.stages
        ),
    )  # fmt: skip
    x = torch.randint(-2, 4, (6, 8, 5), generator=torch.Generator().manual_seed(0)).float()
    ref, em = run_plan(plan, x), emulate(qp, x)
    for k, want in ref.spikes.items():
        assert (em.trace.spikes[k] == want).all(), k
        assert want.any(), k
    if how.spikes is SpikeMode.MULTI:
        assert float(ref.spikes["n1"].max()) > 1


@pytest.mark.lava
@pytest.mark.parametrize(
    ("kind", "how"),
    [
        ("LIF", Choices(reset=ResetRule.SUBTRACT)),
        ("LIF", Choices(reset=ResetRule.SUBTRACT_UNDECAYED)),
        ("IF", Choices(reset=ResetRule.SUBTRACT, spikes=SpikeMode.MULTI, v_min=-0.5)),
        ("LIF", Choices(spikes=SpikeMode.MULTI, v_min=-0.3)),
    ],
    ids=["subtract", "subtract-undecayed", "multi-subtract-floor", "multi-zero-floor"],
)
def test_lava_fixed_point_equals_the_emulator_bit_for_bit(kind, how):
    """Each semantics on a tiny network: every spike (count) of Lava's fixed-point run equals
    the emulator's (``lif_integer`` and ``ProgrammableLIF``'s ``fixed_pt`` model), and each rule
    is in effect (counts above 1; the floor changes the spikes)."""
    from dataclasses import replace

    from nalln.conversion import lava_compat

    lava_compat.import_lava("lava.proc.conv.utils")
    from nalln.conversion.lava_backend import run_lava
    from nalln.loihi.calibration import calibrate
    from nalln.loihi.emulator import emulate

    plan = lower(record_choices(Artefact([tiny_graph(kind)], [], {}), how), 8)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 8, 5, generator=g, dtype=torch.float64).float() * 1.5
    qp = calibrate(plan, x)
    em = emulate(qp, x[:3]).trace
    got = run_lava(qp, x[:3]).trace
    for k, want in em.spikes.items():
        assert got.spikes[k].shape == want.shape and (got.spikes[k] == want).all(), k
        assert want.any(), k
    if how.spikes is SpikeMode.MULTI:
        assert max(float(s.max()) for s in em.spikes.values()) > 1
    if how.v_min is not None:
        free = replace(qp, stages=tuple(replace(q, vmin=None) for q in qp.stages))
        unfloored = emulate(free, x[:3]).trace
        assert any((unfloored.spikes[k] != em.spikes[k]).any() for k in em.spikes)


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


def test_convert_to_lava_runs_subtraction_in_float_and_fixed_point_but_not_netx(run_cli, tmp_path):
    """The Lava plan names the programmable LIF; ``--fixed-point`` writes the fixed-point plan
    with the layers' semantics; netx (whose neurons reset to zero and send one spike) is not
    written, with the reason in one line."""
    name = "sinabs_iaf_single"
    base = ["convert", str(HERE / f"{name}.nir"), "--to", "lava", "--steps", "8", "-q"]
    base += ["--inputs", str(HERE / f"{name}.npz"), *flags(name)]
    for extra in ([], ["--fixed-point"]):
        out = tmp_path / f"c{len(extra)}"
        assert run_cli([*base, *extra, "--out", str(out)]) == 0
        summary = json.loads((out / "convert.json").read_text())
        assert summary["netx"] == (
            "not written: netx cannot hold IF node '1': it resets by 'subtract', and netx's "
            "CUBA neuron resets to zero and sends one spike per step (Lava fixed point runs "
            "it: fixed_point.json)"
        )
        assert not (out / "network.net").exists()
        stages = json.loads((out / "lava_plan.json").read_text())["stages"]
        assert {s["reset"] for s in stages} == {"subtract"}
        assert all("ProgrammableLIF" in s["neuron"] for s in stages)
    layers = json.loads((out / "fixed_point.json").read_text())["layers"]
    assert [(q["reset"], q["spikes"], q["vmin"]) for q in layers] == [
        ("subtract", "single", None)
    ] * 2


def test_the_lava_plan_says_where_counts_travel():
    from nalln.conversion.convert import lava_plan_table

    name = "sinabs_iaf_events"
    art = record_choices(read_artefact(HERE / f"{name}.nir"), choices(name))
    rows = lava_plan_table(lower(art, 8))
    assert [(r["reset"], r["spikes"], r["v_min"]) for r in rows] == [
        ("subtract", "multi", None)
    ] * 2
    assert "sends several spikes per step" in rows[0]["neuron"]
    assert rows[1]["input"] == "graded (24-bit): the previous population's spike counts"


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
