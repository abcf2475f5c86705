"""LI / Integrator readouts and Conv1d on every back-end (issue 13, part 1).

A readout's output is its membrane ``v`` per step (graded, no spikes): on Lava it is our
``LIReadout`` (Lava's LIFReset that never fires, sending ``v``), in fixed point Loihi's LIF
arithmetic with ``du = 4095`` and the 17-bit threshold (``arithmetic.readout_membrane``). A
Conv1d runs as a height-1 Conv2d (reference, Lava, emulator, netx) and as ``nn.Conv1d`` on
Norse. Proved here: the lowering against torch's own ``conv1d``, Lava float against the
reference, Lava fixed point against the emulator bit for bit (spikes and every membrane value),
netx loaded back, and the bad inputs (one line). The producers' fixtures (Norse's LI readout,
the nir API's Conv1d net) are in test_producers.py.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nalln.conversion.nir_io import Artefact
from nalln.conversion.plan import lower
from nalln.errors import NallnError
from nalln.ir.reference import apply_synapse, run_plan

DT = 1e-4
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "producers"


def conv1d_graph(readout: str = "LI", *, seed: int = 0, length: int = 16) -> nir.NIRGraph:
    """Input [2, L] -> Conv1d (groups 2, dilation 2, padding 1, bias) -> LIF -> Flatten ->
    Affine -> LI or Integrator readout (``readout`` "LI" / "I") -> Output."""
    rng = np.random.default_rng(seed)
    out_len = length - 2
    k = np.ones((4, out_len))
    ro = (
        nir.LI(tau=np.full(3, 4e-4), r=np.full(3, 1.5), v_leak=np.zeros(3), metadata={"dt": DT})
        if readout == "LI"
        else nir.I(r=np.full(3, 0.5))
    )
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, length])}),
        "conv": nir.Conv1d(
            input_shape=length,
            weight=rng.normal(0, 1, (4, 1, 3)),
            stride=1,
            padding=1,
            dilation=2,
            groups=2,
            bias=rng.normal(0, 0.1, 4),
        ),
        "lif": nir.LIF(tau=k * 2e-4, r=k, v_leak=0 * k, v_threshold=k * 0.5, metadata={"dt": DT}),
        "flat": nir.Flatten(input_type={"input": np.array([4, out_len])}, start_dim=0),
        "fc": nir.Affine(weight=rng.normal(0, 1, (3, 4 * out_len)), bias=np.full(3, 0.2)),
        "readout": ro,
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    order = list(nodes)
    return nir.NIRGraph(nodes, list(itertools.pairwise(order)), type_check=False)


def inputs(n: int = 3, seed: int = 1, length: int = 16) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(0, 1.5, (n, 2, length)))


def plan_of(graph: nir.NIRGraph, steps: int = 6):
    return lower(Artefact([graph], [], {}), steps)


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups"), [(1, 1, 2, 2), (2, 2, 1, 1), (3, 0, 2, 4)]
)
def test_conv1d_lowering_equals_torch_conv1d(stride, padding, dilation, groups):
    """The height-1 conv with the dilation's zeros in its kernel is torch's ``conv1d``."""
    rng = np.random.default_rng(stride + groups)
    w = rng.normal(0, 1, (4, 4 // groups, 3))
    node = nir.Conv1d(
        input_shape=17,
        weight=w,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=rng.normal(0, 1, 4),
    )
    from nalln.conversion.conv1d import conv1d_out, conv1d_synapse

    out = conv1d_out(node, "c", (4, 17))
    syn = conv1d_synapse(node, "c", (4, 17), out)
    x = torch.from_numpy(rng.normal(0, 1, (2, 4, 17)))
    want = F.conv1d(
        x, torch.from_numpy(w), torch.from_numpy(node.bias), stride, padding, dilation, groups
    )
    got = apply_synapse(syn, x)
    assert tuple(want.shape[1:]) == out and got.shape == (2, 4, 1, out[1])
    assert torch.allclose(got.reshape(want.shape), want, atol=1e-12)


@pytest.mark.parametrize("readout", ["LI", "I"])
def test_readout_membrane_is_the_nir_equation(readout):
    """The output of an LI is ``v <- (1 - dt/tau) v + dt/tau r I``, of an Integrator
    ``v <- v + r I``, per step (written out here from the graph's parameters)."""
    g = conv1d_graph(readout)
    plan = plan_of(g)
    x = inputs()
    trace = run_plan(plan, x)
    fc, ro = g.nodes["fc"], g.nodes["readout"]
    s = trace.spikes["lif"].double().reshape(6, 3, -1)
    cur = s @ torch.from_numpy(fc.weight).T + torch.from_numpy(fc.bias)
    v = torch.zeros(3, 3, dtype=torch.float64)
    for t in range(6):
        if readout == "LI":
            beta = DT / ro.tau
            v = (1 - torch.from_numpy(beta)) * v + torch.from_numpy(beta * ro.r) * cur[t]
        else:
            v = v + torch.from_numpy(ro.r) * cur[t]
        assert torch.allclose(trace.outputs[t], v, atol=1e-12)
    assert 0.05 < float(trace.spikes["lif"].double().mean()) < 0.95


@pytest.mark.norse
@pytest.mark.parametrize("readout", ["LI", "I"])
def test_norse_runs_conv1d_and_readouts_as_the_reference(readout):
    from nalln.conversion.norse_backend import NorseNetwork

    art = Artefact([conv1d_graph(readout)], [], {})
    x = inputs()
    want = run_plan(lower(art, 6), x)
    got = NorseNetwork(art).run(x, 6)
    assert torch.equal(got.spikes["lif"], want.spikes["lif"])
    assert torch.allclose(got.outputs.double(), want.outputs, atol=1e-5)


@pytest.mark.lava
@pytest.mark.parametrize("readout", ["LI", "I"])
def test_lava_float_runs_conv1d_and_readouts_as_the_reference(readout):
    from nalln.conversion.lava_backend import run_lava

    plan = plan_of(conv1d_graph(readout))
    x = inputs()
    want = run_plan(plan, x)
    got = run_lava(plan, x).trace
    assert torch.equal(got.spikes["lif"], want.spikes["lif"])
    peak = float(want.outputs.abs().max())
    assert float((got.outputs.double() - want.outputs).abs().max()) <= 1e-6 * peak


@pytest.mark.lava
@pytest.mark.parametrize("readout", ["LI", "I"])
def test_lava_fixed_point_equals_the_emulator_bit_for_bit(readout):
    """Every spike and every membrane value of Lava's bit-accurate models equals the
    emulator's, on a Conv1d (groups, dilation) net with an LI or Integrator readout; the fixed
    point stays close to float (calibrated on 16 inputs, run on 3 others)."""
    from nalln.conversion.lava_backend import run_lava
    from nalln.loihi.calibration import calibrate
    from nalln.loihi.emulator import agreement, emulate

    plan = plan_of(conv1d_graph(readout))
    qp = calibrate(plan, inputs(16, seed=2))
    ro = qp.stages[-1]
    assert ro.readout is not None and ro.vth == 2**17 - 1
    assert ro.dv == (1024 if readout == "LI" else 0)  # dt/tau = 0.25
    x = inputs(3)
    em = emulate(qp, x)
    assert not em.overflowed
    got = run_lava(qp, x).trace
    assert torch.equal(got.outputs, em.trace.outputs)
    assert torch.equal(got.spikes["lif"], em.trace.spikes["lif"])
    ref = run_plan(plan, x)
    assert agreement(em.trace.spikes["lif"], ref.spikes["lif"]) >= 0.97
    assert torch.equal(em.trace.logits.argmax(1), ref.logits.argmax(1))


@pytest.mark.lava
def test_netx_holds_an_li_readout_on_a_conv1d_net(tmp_path):
    """netx's CUBA neuron with ``vDecay = dv`` and an unreachable threshold is the LI; loaded
    back with lava-dl's netx, its membrane after the window equals the emulator's last step."""
    import h5py

    from nalln.conversion.netx import check_netx, write_netx
    from nalln.loihi.calibration import calibrate

    plan = plan_of(conv1d_graph("LI"))
    x = inputs(8, seed=2)
    qp = calibrate(plan, x)
    path = write_netx(qp, tmp_path / "net.net")
    with h5py.File(path) as f:
        assert list(f["layer/1/shape"][()]) == [4, 1, 14]  # the Conv1d as [C, 1, L']
        assert int(f["layer/3/neuron/vDecay"][()]) == qp.stages[-1].dv == 1024
    summary = check_netx(path, qp, x)
    assert summary["compared"] == "LI readout membrane at the last step"
    assert summary["max_abs_difference"] < 1e-6


def test_conv1d_on_the_wrong_input_names_both_shapes():
    g = conv1d_graph()
    g.nodes["input"] = nir.Input(input_type={"input": np.array([2, 8, 8])})
    with pytest.raises(NallnError, match=r"Conv1d\): it expects \[2, L\] .* receives \[2, 8, 8\]"):
        plan_of(g)
    even = conv1d_graph()
    even.nodes["conv"] = nir.Conv1d(
        input_shape=16,
        weight=np.ones((4, 1, 2)),
        stride=1,
        padding="same",
        dilation=1,
        groups=2,
        bias=np.zeros(4),
    )
    with pytest.raises(NallnError, match="padding='same' is supported only for stride 1 and an"):
        plan_of(even)


def test_cli_inputs_that_do_not_fit_a_conv1d_graph_are_one_line(run_cli, tmp_path, capsys):
    x = tmp_path / "x.npz"
    np.savez(x, x=np.zeros((2, 3, 16), np.float32))
    out = tmp_path / "s"
    args = ["simulate", str(FIXTURES / "nir_api_conv1d.nir"), "--backend", "norse"]
    code = run_cli([*args, "--inputs", str(x), "--steps", "4", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "[2, 3, 16] do not fit the graph's input [2, 16]" in err and not out.exists()


def test_energy_report_and_hardware_fit_run_on_the_new_fixtures(run_cli, tmp_path, capsys):
    """The Conv1d net (counted as the height-1 conv it runs as) and Norse's LI readout graph
    (its dt recorded by ``convert --to nir --dt``: energy has no semantics flags)."""
    li = tmp_path / "li"
    args = ["convert", str(FIXTURES / "norse_li_readout.nir"), "--to", "nir", "--dt", "1e-6"]
    assert run_cli([*args, "--out", str(li), "-q"]) == 0
    for graph, name in (
        (FIXTURES / "nir_api_conv1d.nir", "nir_api_conv1d"),
        (li / "graph.nir", "norse_li_readout"),
    ):
        out = tmp_path / f"e-{name}"
        code = run_cli(
            [
                "energy",
                "report",
                str(graph),
                "--inputs",
                str(FIXTURES / f"{name}.npz"),
                "--targets",
                "loihi2",
                "--out",
                str(out),
                "-q",
            ]
        )
        assert code == 0, capsys.readouterr().err
        rep = json.loads((out / "energy.json").read_text())
        layers = {r["name"]: r for r in rep["snn"]["layers"]}
        if name == "nir_api_conv1d":  # events: ACs, also in the first layer; then spikes
            assert layers["conv1"]["synaptic_acs"] > 0 == layers["conv1"]["synaptic_macs"]
            assert layers["conv2"]["input"] == "spikes" and layers["conv2"]["kind"] == "conv"
        else:  # floats into the first layer: MACs; the readout layer is counted too
            assert layers["0"]["synaptic_macs"] > 0 and layers["2"]["synaptic_acs"] > 0
        assert rep["snn"]["totals"]["spikes"] > 0
        capsys.readouterr()
        assert run_cli(["hardware", "fit", "--target", "loihi2", str(graph), "--json"]) == 0
        fit = json.loads(capsys.readouterr().out)
        assert fit["feasible"] is True and fit["neurons"] > 0, fit


@pytest.mark.lava
@pytest.mark.parametrize(
    ("name", "extra", "compared"),
    [
        ("norse_li_readout", ["--dt", "1e-6"], "LI readout membrane at the last step"),
        ("nir_api_conv1d", [], "output spikes of input"),
    ],
)
def test_convert_to_lava_writes_netx_for_the_new_fixtures(run_cli, tmp_path, name, extra, compared):
    """netx holds the LI readout (CUBA, ``vDecay = dv``) and the Conv1d (a [C, 1, L] conv);
    both files are loaded back with lava-dl's netx and equal the fixed-point plan."""
    out = tmp_path / "c"
    args = ["convert", str(FIXTURES / f"{name}.nir"), "--to", "lava", "--out", str(out), "-q"]
    assert run_cli([*args, "--inputs", str(FIXTURES / f"{name}.npz"), *extra]) == 0
    netx = json.loads((out / "convert.json").read_text())["netx"]
    assert netx["compared"].startswith(compared) and netx["max_abs_difference"] < 1e-6
    assert (out / "network.net").stat().st_size > 0


@pytest.mark.lava
@pytest.mark.parametrize("li", [True, False])
def test_a_conv_readout_on_graded_input_runs_in_fixed_point(li):
    """A Conv1d right on the per-step graded input as the readout (an LI membrane, or nalln's
    own current readout): one bias per channel of the [C, L] map, on Lava and the emulator
    alike (bit for bit), close to float; Lava float equals the reference."""
    from nalln.conversion.lava_backend import run_lava
    from nalln.loihi.calibration import calibrate
    from nalln.loihi.emulator import emulate

    rng = np.random.default_rng(3)
    shape = (3, 10)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 10])}),
        "conv": nir.Conv1d(
            input_shape=10,
            weight=rng.normal(0, 1, (3, 2, 3)),
            stride=1,
            padding="same",
            dilation=1,
            groups=1,
            bias=np.array([0.5, -0.3, 0.1]),
        ),
        "li": nir.LI(
            tau=np.full(shape, 4e-4),
            r=np.ones(shape),
            v_leak=np.zeros(shape),
            metadata={"dt": DT},
        ),
        "output": nir.Output(output_type={"output": np.array(shape)}),
    }
    if not li:
        del nodes["li"]
    plan = plan_of(nir.NIRGraph(nodes, list(itertools.pairwise(nodes)), type_check=False), 5)
    x = torch.from_numpy(rng.normal(0, 1, (3, 5, 2, 10)))
    qp = calibrate(plan, x)
    em = emulate(qp, x)
    got = run_lava(qp, x).trace
    assert not em.overflowed and torch.equal(got.outputs, em.trace.outputs)
    ref = run_plan(plan, x).outputs
    peak = float(ref.abs().max())
    assert float((em.trace.outputs.double() - ref).abs().max()) < 0.02 * peak
    lava_float = run_lava(plan, x).trace.outputs.double()
    assert float((lava_float - ref).abs().max()) <= 1e-6 * peak
