"""Recurrence (neuron -> Linear/Affine -> the same neuron, NIR's one-step delay): the float
reference against an independent float64 loop, Norse (nirtorch's executor) and Lava float
against the reference spike for spike, Lava fixed point against the bit-exact emulator (and
the emulator's agreement with float), netx's dense_rec loaded back, and one-line refusals
where Lava and Loihi cannot run a loop exactly (a bias on the loop)."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

from nalln.conversion.nir_io import Artefact
from nalln.conversion.plan import lower
from nalln.errors import NallnError
from nalln.ir.reference import run_plan

DT = 1e-4


def rnn(kind: str, seed: int = 0, bias: bool = True) -> nir.NIRGraph:
    """Input [5] -> Affine -> (Cuba)LIF <-> w_rec -> Affine -> Output (``bias=False``: the input
    Affine's bias is zero, as Lava's CubaLIF needs)."""
    rng = np.random.default_rng(seed)
    k = np.ones(6)
    if kind == "CubaLIF":
        cell = nir.CubaLIF(
            tau_syn=k * 2e-4,
            tau_mem=k * 4e-4,
            r=k * 4.0,
            v_leak=k * 0,
            v_threshold=k * 0.5,
            metadata={"dt": DT},
        )
    else:
        cell = nir.LIF(
            tau=k * 5e-4, r=k * 3.0, v_leak=k * 0, v_threshold=k * 0.6, metadata={"dt": DT}
        )
    nodes = {
        "input": nir.Input(input_type={"input": np.array([5])}),
        "fc_in": nir.Affine(
            weight=rng.normal(0, 0.8, (6, 5)), bias=rng.normal(0, 0.1, 6) * float(bias)
        ),
        "cell": cell,
        "w_rec": nir.Linear(weight=rng.normal(0, 0.7, (6, 6))),
        "fc_out": nir.Affine(weight=rng.normal(0, 1, (3, 6)), bias=np.zeros(3)),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    edges = [("input", "fc_in"), ("fc_in", "cell"), ("cell", "w_rec"), ("w_rec", "cell")]
    edges += [("cell", "fc_out"), ("fc_out", "output")]
    return nir.NIRGraph(nodes, edges, type_check=False)


def deep_rnn(kind: str) -> nir.NIRGraph:
    """:func:`rnn` (no input bias) behind a feed-forward IF layer, so the loop sits in the
    second stage (a later Lava window)."""
    g = rnn(kind, bias=False)
    rng = np.random.default_rng(5)
    nodes = {"input": g.nodes["input"]}
    nodes["fc_pre"] = nir.Affine(weight=rng.normal(0, 1.0, (5, 5)), bias=np.full(5, 0.1))
    nodes["pre"] = nir.IF(r=np.ones(5), v_threshold=np.full(5, 0.7))
    nodes |= {k: v for k, v in g.nodes.items() if k != "input"}
    nodes["fc_in"] = nir.Affine(weight=rng.normal(0, 1.2, (6, 5)), bias=np.zeros(6))
    edges = [("input", "fc_pre"), ("fc_pre", "pre"), ("pre", "fc_in")]
    edges += [e for e in g.edges if e[0] != "input"]
    return nir.NIRGraph(nodes, edges, type_check=False)


def loop(
    g: nir.NIRGraph, x: np.ndarray, rec_bias: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The NIR equations with the loop delayed by one step (nothing arrives at step 0, its
    bias ``rec_bias`` neither)."""
    n = g.nodes
    c = n["cell"]
    v = i = np.zeros((x.shape[0], 6))
    z = None
    outs, spikes = [], []
    for t in range(x.shape[1]):
        cur = x[:, t] @ n["fc_in"].weight.T + n["fc_in"].bias
        if z is not None:
            cur = cur + z @ n["w_rec"].weight.T + (0 if rec_bias is None else rec_bias)
        if isinstance(c, nir.CubaLIF):
            i = i + DT / c.tau_syn * (-i + c.w_in * cur)
            v = v + DT / c.tau_mem * (c.v_leak - v + c.r * i)
        else:
            v = v + DT / c.tau * (c.v_leak - v + c.r * cur)
        s = v > c.v_threshold
        v = np.where(s, 0.0, v)
        z = s.astype(np.float64)
        spikes.append(s)
        outs.append(z @ n["fc_out"].weight.T + n["fc_out"].bias)
    return np.stack(outs), np.stack(spikes)


def inputs(n: int = 6, steps: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, steps, 5, generator=g, dtype=torch.float64).float() * 1.5


@pytest.mark.parametrize("kind", ["LIF", "CubaLIF"])
def test_reference_equals_the_delayed_loop(kind):
    g = rnn(kind)
    x = inputs()
    trace = run_plan(lower(Artefact([g], [], {}), 8), x)
    want_out, want_spikes = loop(g, x.double().numpy())
    got = trace.spikes["cell"].numpy()
    assert np.array_equal(got, want_spikes)
    assert 0.05 < got.mean() < 0.95
    assert np.allclose(trace.outputs.numpy(), want_out, atol=1e-9)
    no_rec = rnn(kind)
    no_rec.nodes["w_rec"].weight = np.zeros((6, 6))
    plain = run_plan(lower(Artefact([no_rec], [], {}), 8), x).spikes["cell"]
    assert not torch.equal(plain, trace.spikes["cell"])  # the loop matters


@pytest.mark.norse
@pytest.mark.parametrize("kind", ["LIF", "CubaLIF"])
def test_norse_equals_the_reference(kind):
    from nalln.conversion.norse_backend import NorseNetwork

    art = Artefact([rnn(kind)], [], {})
    x = inputs()
    want = run_plan(lower(art, 8), x)
    got = NorseNetwork(art).run(x, 8)
    assert torch.equal(got.spikes["cell"], want.spikes["cell"])
    assert torch.allclose(got.outputs.double(), want.outputs, atol=1e-4)


def biased_loop(kind: str = "LIF", bias: float = -0.4) -> nir.NIRGraph:
    """:func:`rnn` with an Affine loop: its bias arrives with the loop, from step 1 on."""
    g = rnn(kind)
    g.nodes["w_rec"] = nir.Affine(weight=g.nodes["w_rec"].weight, bias=np.full(6, bias))
    return g


def test_a_loop_bias_arrives_from_the_second_step():
    """The reference adds a loop Affine's bias with the loop's spikes (not at step 0)."""
    x = inputs()
    base = run_plan(lower(Artefact([rnn("LIF")], [], {}), 8), x)
    g = biased_loop()
    got = run_plan(lower(Artefact([g], [], {}), 8), x)
    want_out, want_spikes = loop(rnn("LIF"), x.double().numpy(), rec_bias=g.nodes["w_rec"].bias)
    assert np.array_equal(got.spikes["cell"].numpy(), want_spikes)
    assert torch.equal(got.spikes["cell"][0], base.spikes["cell"][0])
    assert not torch.equal(got.spikes["cell"], base.spikes["cell"])


LAVA_CASES = [("LIF", rnn("LIF")), ("CubaLIF", rnn("CubaLIF"))]
LAVA_CASES += [("deep CubaLIF", deep_rnn("CubaLIF")), ("LIF biased loop", biased_loop())]


@pytest.fixture(scope="module")
def lava_backend():
    from nalln.conversion import lava_compat

    lava_compat.import_lava("lava.proc.conv.utils")
    from nalln.conversion import lava_backend

    return lava_backend


@pytest.mark.lava
@pytest.mark.parametrize(("name", "g"), LAVA_CASES, ids=[c[0] for c in LAVA_CASES])
def test_lava_float_equals_the_reference(lava_backend, name, g):
    """Four inputs streamed back to back through one Lava network: every spike equal, and the
    test can fail - inputs end with spikes that the loop would carry into the next input. A
    CubaLIF's input bias and a loop bias enter the current through an always-on neuron."""
    plan = lower(Artefact([g], [], {}), 8)
    x = inputs(4)
    want = run_plan(plan, x)
    got = lava_backend.run_lava(plan, x).trace
    for k in want.spikes:
        assert torch.equal(got.spikes[k], want.spikes[k]), (name, k)
    assert torch.allclose(got.outputs.double(), want.outputs, atol=1e-8)
    assert bool(want.spikes["cell"][-1, :-1].any())  # a spike on an input's last step
    held = x[:, 0]  # held inputs ([N, 5]) too
    assert torch.equal(
        lava_backend.run_lava(plan, held).trace.spikes["cell"], run_plan(plan, held).spikes["cell"]
    )


@pytest.mark.lava
@pytest.mark.parametrize(("name", "g"), LAVA_CASES, ids=[c[0] for c in LAVA_CASES])
def test_lava_fixed_point_equals_the_emulator(lava_backend, name, g):
    """Lava's bit-accurate LIF (current decay du, the loop Dense with its weight exponent, bias
    columns from an always-on neuron) equals the emulator spike for spike; the emulator agrees
    with float on held-out inputs."""
    from nalln.loihi.calibration import calibrate
    from nalln.loihi.emulator import agreement, emulate

    plan = lower(Artefact([g], [], {}), 8)
    qp = calibrate(plan, inputs(16))
    loop_q = next(q for q in qp.stages if q.recurrent is not None)
    # the stem's scale is set by its graded input, so its loop needs an exponent; behind a
    # spiking layer the forward weights set the scale and the loop fits exponent 0
    assert (loop_q.recurrent_exp > 0) == ("deep" not in name)
    assert loop_q.du == (2047 if "CubaLIF" in name else 4095)
    # (exp, first step): the stem's scale, from its float peaks, needs exponents on the columns
    drives = {"CubaLIF": [(1, 0)], "LIF biased loop": [(4, 1)]}.get(name, [])
    assert [(d.exp, d.from_step) for d in loop_q.drives] == drives
    x = inputs(3)
    em = emulate(qp, x)
    assert em.overflowed == {}
    got = lava_backend.run_lava(qp, x).trace
    for k in em.trace.spikes:
        assert torch.equal(got.spikes[k], em.trace.spikes[k]), (name, k)
    assert torch.allclose(got.outputs, em.trace.outputs)
    held_out = torch.randn(32, 8, 5, generator=torch.Generator().manual_seed(11)) * 1.5
    want = run_plan(plan, held_out).spikes
    got = emulate(qp, held_out).trace.spikes
    assert all(agreement(got[k], want[k]) >= 0.97 for k in want), name


@pytest.mark.lava
def test_fixed_point_without_the_exponent_is_bit_exact_too(lava_backend):
    """Exponent 0 (every weight 8-bit, the scale capped by the loop: what netx holds)."""
    from nalln.loihi.calibration import calibrate
    from nalln.loihi.emulator import emulate

    plan = lower(Artefact([rnn("CubaLIF", bias=False)], [], {}), 8)
    qp = calibrate(plan, inputs(16), recurrent_exp=False)
    assert qp.stages[0].recurrent_exp == 0 and np.abs(qp.stages[0].recurrent).max() <= 254
    x = inputs(3)
    got = lava_backend.run_lava(qp, x).trace.spikes["cell"]
    assert torch.equal(got, emulate(qp, x).trace.spikes["cell"])


@pytest.mark.lava
@pytest.mark.parametrize("kind", ["LIF", "CubaLIF"])
def test_netx_dense_rec_loads_back_and_runs_the_loop(lava_backend, kind, tmp_path):
    from dataclasses import replace

    import h5py

    from nalln.conversion.netx import check_netx, run_netx, write_netx
    from nalln.loihi.calibration import calibrate
    from nalln.loihi.emulator import emulate

    plan = lower(Artefact([rnn(kind, bias=kind == "LIF")], [], {}), 8)
    x = inputs(8)
    with_exp = calibrate(plan, x)
    biased = calibrate(lower(Artefact([rnn("CubaLIF")], [], {}), 8), x)
    with pytest.raises(NallnError, match="netx cannot hold layer 'cell': its bias enters the"):
        write_netx(biased, tmp_path / "no.net")
    with pytest.raises(NallnError, match="netx cannot hold layer 'cell': its loop weights need"):
        write_netx(with_exp, tmp_path / "no.net")
    assert not (tmp_path / "no.net").exists()
    qp = calibrate(plan, x, recurrent_exp=False)
    path = write_netx(qp, tmp_path / "rnn.net")
    with h5py.File(path) as f:
        assert f["layer/1/type"][0] == b"dense_rec" and "weight_rec" in f["layer/1"]
        assert int(f["layer/1/neuron/iDecay"][()]) == qp.stages[0].du + 1
    summary = check_netx(path, qp, x)
    assert summary["max_abs_difference"] < 1e-6
    # the loop matters: the same file without it runs differently
    cut = replace(
        qp, stages=(replace(qp.stages[0], recurrent=0 * qp.stages[0].recurrent),) + qp.stages[1:]
    )
    logits = run_netx(write_netx(cut, tmp_path / "cut.net"), cut, x[:1])
    assert np.abs(logits - emulate(qp, x[:1]).trace.logits[0].double().numpy()).max() > 1e-3


def test_a_cycle_without_a_neuron_is_refused():
    g = rnn("LIF")
    g.edges += [("fc_out", "fc_in")]
    with pytest.raises(NallnError, match="closes a cycle"):
        lower(Artefact([g], [], {}), 2)


@pytest.mark.norse
@pytest.mark.lava
def test_cli_simulates_and_converts_a_recurrent_file(run_cli, tmp_path, capsys):
    import json

    path = tmp_path / "rnn.nir"
    nir.write(path, rnn("CubaLIF", bias=False))
    xs = tmp_path / "x.npz"
    np.savez(xs, x=inputs(3).numpy())
    for backend in ("norse", "lava"):
        out = tmp_path / backend
        cmd = ["simulate", str(path), "--backend", backend, "--inputs", str(xs)]
        assert run_cli([*cmd, "--out", str(out), "--json", "-q"]) == 0
        m = json.loads(capsys.readouterr().out)
        assert m["spike_agreement"]["overall"] == 1.0 and m["num_steps"] == 8, backend
    convert = ["convert", str(path), "--to", "lava", "--inputs", str(xs), "--json", "-q"]
    assert run_cli([*convert, "--out", str(tmp_path / "c")]) == 0
    m = json.loads(capsys.readouterr().out)
    assert (tmp_path / "c" / "network.net").exists()
    assert m["netx"]["max_abs_difference"] < 1e-6
    assert "exponent 0 only" in m["netx_grid"]["why"]
    plan = json.loads((tmp_path / "c" / "lava_plan.json").read_text())
    assert plan["stages"][0]["recurrent"].startswith("w_rec: Dense (RecurrentDense)")
    nir.write(path, rnn("CubaLIF"))  # a bias before the CubaLIF: no netx, one reason
    assert run_cli([*convert, "--out", str(tmp_path / "d")]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["netx"].startswith("not written: netx cannot hold layer 'cell': its bias enters")
    assert not (tmp_path / "d" / "network.net").exists()
