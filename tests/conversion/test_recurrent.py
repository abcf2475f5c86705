"""Recurrence (neuron -> Linear/Affine -> the same neuron, NIR's one-step delay): the float
reference against an independent float64 loop, Norse (nirtorch's executor) against the
reference, and one-line refusals where nalln's Lava graph and Loihi fixed point cannot run it."""

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


def rnn(kind: str, seed: int = 0) -> nir.NIRGraph:
    """Input [5] -> Affine -> (Cuba)LIF <-> w_rec -> Affine -> Output."""
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
        "fc_in": nir.Affine(weight=rng.normal(0, 0.8, (6, 5)), bias=rng.normal(0, 0.1, 6)),
        "cell": cell,
        "w_rec": nir.Linear(weight=rng.normal(0, 0.7, (6, 6))),
        "fc_out": nir.Affine(weight=rng.normal(0, 1, (3, 6)), bias=np.zeros(3)),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    edges = [("input", "fc_in"), ("fc_in", "cell"), ("cell", "w_rec"), ("w_rec", "cell")]
    edges += [("cell", "fc_out"), ("fc_out", "output")]
    return nir.NIRGraph(nodes, edges, type_check=False)


def loop(g: nir.NIRGraph, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The NIR equations with the loop delayed by one step (nothing arrives at step 0)."""
    n = g.nodes
    c = n["cell"]
    v = i = np.zeros((x.shape[0], 6))
    z = None
    outs, spikes = [], []
    for t in range(x.shape[1]):
        cur = x[:, t] @ n["fc_in"].weight.T + n["fc_in"].bias
        if z is not None:
            cur = cur + z @ n["w_rec"].weight.T
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


def test_recurrence_refusals_name_the_node():
    from nalln.conversion.lava_backend import lava_network
    from nalln.loihi.calibration import calibrate

    plan = lower(Artefact([rnn("LIF")], [], {}), 4)
    with pytest.raises(NallnError, match="LIF node 'cell' is recurrent \\(through 'w_rec'\\)"):
        lava_network(plan)
    with pytest.raises(NallnError, match="LIF node 'cell' is recurrent"):
        calibrate(plan, inputs(4, 4))


def test_a_cycle_without_a_neuron_is_refused():
    g = rnn("LIF")
    g.edges += [("fc_out", "fc_in")]
    with pytest.raises(NallnError, match="closes a cycle"):
        lower(Artefact([g], [], {}), 2)


@pytest.mark.norse
def test_cli_simulates_a_recurrent_file_on_norse_and_refuses_lava(run_cli, tmp_path, capsys):
    import json

    path = tmp_path / "rnn.nir"
    nir.write(path, rnn("CubaLIF"))
    xs = tmp_path / "x.npz"
    np.savez(xs, x=inputs(3).numpy())
    out = tmp_path / "s"
    cmd = ["simulate", str(path), "--backend", "norse", "--inputs", str(xs), "--out", str(out)]
    assert run_cli([*cmd, "--json", "-q"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["spike_agreement"]["overall"] == 1.0 and m["num_steps"] == 8
    convert = ["convert", str(path), "--to", "lava", "--steps", "4", "-q"]
    code = run_cli([*convert, "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "'cell' is recurrent (through 'w_rec')" in err
    assert err.count("\n") == 1 and not (tmp_path / "c").exists()
