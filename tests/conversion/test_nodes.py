"""IF, CubaLIF, Threshold and Scale nodes: the float reference against an independent float64
interpreter of the NIR 1.0.8 equations, Norse and Lava against the reference spike for spike,
Loihi fixed point where its arithmetic allows, one-line refusals where it does not."""

from __future__ import annotations

import itertools

import nir
import numpy as np
import pytest
import torch

from nalln.conversion.nir_io import Artefact, article
from nalln.conversion.plan import lower
from nalln.errors import NallnError
from nalln.ir.reference import run_plan
from nalln.ir.semantics import ResetRule

DT = 1e-4
KINDS = ("LIF", "IF", "CubaLIF", "Threshold")


def neuron(kind: str, shape: tuple[int, ...], th: float) -> nir.NIRNode:
    full = lambda v: np.full(shape, v, np.float64)  # noqa: E731
    if kind == "LIF":
        return nir.LIF(
            tau=full(5e-4), r=full(3.0), v_leak=full(0), v_threshold=full(th), metadata={"dt": DT}
        )
    if kind == "IF":
        return nir.IF(r=full(0.7), v_threshold=full(th))
    if kind == "CubaLIF":
        return nir.CubaLIF(
            tau_syn=full(2e-4),
            tau_mem=full(4e-4),
            r=full(4.0),
            v_leak=full(0),
            v_threshold=full(th),
            w_in=full(1.5),
            metadata={"dt": DT},
        )
    return nir.Threshold(threshold=full(th))


def graph(kind: str, *, bias: bool = True, seed: int = 0, readout: str = "") -> nir.NIRGraph:
    """Input [2, 8, 8] -> Scale -> Conv -> neuron -> SumPool -> Flatten -> Affine -> Scale ->
    neuron -> Affine [-> LI or I readout] -> Output."""
    rng = np.random.default_rng(seed)
    c = 4
    b = (lambda n: rng.normal(0, 0.1, n).astype(np.float32)) if bias else (lambda n: None)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "scale_in": nir.Scale(
            scale=np.broadcast_to(np.array([1.5, 0.5])[:, None, None], (2, 8, 8)).copy()
        ),
        "conv": nir.Conv2d(
            input_shape=(8, 8),
            weight=rng.normal(0, 0.6, (c, 2, 3, 3)).astype(np.float32),
            stride=2,
            padding=1,
            dilation=1,
            groups=1,
            bias=b(c) if bias else np.zeros(c, np.float32),
        ),
        "n1": neuron(kind, (c, 4, 4), 0.5),
        "pool": nir.SumPool2d(
            kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])
        ),
        "flat": nir.Flatten(input_type={"input": np.array([c, 2, 2])}, start_dim=0),
        "fc1": nir.Affine(
            weight=rng.normal(0, 0.5, (6, c * 4)).astype(np.float32),
            bias=b(6) if bias else np.zeros(6, np.float32),
        ),
        "scale_mid": nir.Scale(scale=np.linspace(0.5, 2.0, 6)),
        "n2": neuron(kind, (6,), 0.6),
        "fc2": nir.Affine(
            weight=rng.normal(0, 1, (3, 6)).astype(np.float32), bias=np.zeros(3, np.float32)
        ),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    if readout:
        output = nodes.pop("output")
        ones = np.ones(3)
        nodes["readout"] = (
            nir.LI(tau=ones * 4e-4, r=ones * 2.0, v_leak=ones * 0, metadata={"dt": DT})
            if readout == "LI"
            else nir.I(r=ones * 0.5)
        )
        nodes["output"] = output
    names = list(nodes)
    return nir.NIRGraph(nodes, list(itertools.pairwise(names)), type_check=False)


def interpret(g: nir.NIRGraph, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """An independent float64 reading of the NIR equations (forward Euler, step dt; IF with the
    step as unit of time), node by node: outputs [T, B, K] and spikes per neuron node."""
    order = [e[0] for e in g.edges] + [g.edges[-1][1]]
    state: dict[str, dict[str, np.ndarray]] = {}
    spikes: dict[str, list[np.ndarray]] = {}
    outs = []
    for t in range(x.shape[1]):
        h = x[:, t].astype(np.float64)
        for name in order:
            n, st = g.nodes[name], state.setdefault(name, {})
            if isinstance(n, nir.Scale):
                h = h * np.asarray(n.scale, np.float64)
            elif isinstance(n, nir.Conv2d):
                w = np.asarray(n.weight, np.float64)
                xp = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
                o = np.zeros((h.shape[0], w.shape[0], 4, 4))
                for i, j in itertools.product(range(4), range(4)):
                    o[:, :, i, j] = np.einsum(
                        "bchw,ochw->bo", xp[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3], w
                    )
                h = o + np.asarray(n.bias, np.float64)[None, :, None, None]
            elif isinstance(n, nir.SumPool2d):
                b_, c_, hh, ww = h.shape
                h = h.reshape(b_, c_, hh // 2, 2, ww // 2, 2).sum((3, 5))
            elif isinstance(n, nir.Flatten):
                h = h.reshape(h.shape[0], -1)
            elif isinstance(n, nir.Affine):
                h = h @ np.asarray(n.weight, np.float64).T + np.asarray(n.bias, np.float64)
            elif isinstance(n, nir.LI):
                st["v"] = st.get("v", np.zeros_like(h)) + DT / n.tau * (
                    n.v_leak - st.get("v", 0) + n.r * h
                )
                h = st["v"]
            elif isinstance(n, nir.I):
                st["v"] = st.get("v", np.zeros_like(h)) + n.r * h
                h = st["v"]
            elif isinstance(n, nir.Threshold):
                h = (h > n.threshold).astype(np.float64)
                spikes.setdefault(name, []).append(h > 0)
            elif isinstance(n, nir.LIF | nir.IF | nir.CubaLIF):
                v = st.get("v", np.zeros_like(h))
                if isinstance(n, nir.LIF):
                    v = v + DT / n.tau * (n.v_leak - v + n.r * h)
                elif isinstance(n, nir.IF):
                    v = v + n.r * h
                else:
                    i = st.get("i", np.zeros_like(h))
                    i = i + DT / n.tau_syn * (-i + n.w_in * h)
                    st["i"] = i
                    v = v + DT / n.tau_mem * (n.v_leak - v + n.r * i)
                z = v > n.v_threshold
                st["v"] = np.where(z, n.v_reset, v)
                h = z.astype(np.float64)
                spikes.setdefault(name, []).append(z)
        outs.append(h)
    return np.stack(outs), {k: np.stack(v) for k, v in spikes.items()}


def inputs(n: int = 5, steps: int = 6, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, steps, 2, 8, 8, generator=g, dtype=torch.float64).float() * 1.5


@pytest.mark.parametrize("kind", KINDS)
def test_reference_equals_the_nir_equations(kind):
    g = graph(kind)
    x = inputs()
    trace = run_plan(lower(Artefact([g], [], {}), 6), x)
    want_out, want_spikes = interpret(g, x.double().numpy())
    for name in ("n1", "n2"):
        got = trace.spikes[name].numpy()
        assert np.array_equal(got, want_spikes[name]), (kind, name)
        assert 0 < got.mean() < 1, (kind, name, got.mean())  # neither silent nor saturated
    assert np.allclose(trace.outputs.numpy(), want_out, atol=1e-9)


@pytest.mark.norse
@pytest.mark.parametrize("kind", KINDS)
def test_norse_equals_the_reference(kind):
    from nalln.conversion.norse_backend import NorseNetwork

    art = Artefact([graph(kind)], [], {})
    plan = lower(art, 6)
    x = inputs()
    want = run_plan(plan, x)
    got = NorseNetwork(art).run(x, 6)
    for k in want.spikes:
        assert torch.equal(got.spikes[k], want.spikes[k]), (kind, k)
    assert torch.allclose(got.outputs.double(), want.outputs, atol=1e-4)


@pytest.mark.lava
@pytest.mark.parametrize("kind", KINDS)
def test_lava_float_equals_the_reference(kind):
    from nalln.conversion import lava_compat

    lava_compat.import_lava("lava.proc.conv.utils")
    from nalln.conversion.lava_backend import run_lava

    plan = lower(Artefact([graph(kind)], [], {}), 6)
    x = inputs(3)
    want = run_plan(plan, x)
    got = run_lava(plan, x).trace
    for k in want.spikes:
        assert torch.equal(got.spikes[k], want.spikes[k]), (kind, k)
        assert bool(want.spikes[k].any()), (kind, k)
    assert torch.allclose(got.outputs.double(), want.outputs, atol=1e-6)


@pytest.mark.lava
@pytest.mark.parametrize("kind", ["IF", "Threshold", "CubaLIF"])
def test_lava_fixed_point_equals_the_emulator(kind):
    from nalln.conversion import lava_compat

    lava_compat.import_lava("lava.proc.conv.utils")
    from nalln.conversion.lava_backend import run_lava
    from nalln.loihi.calibration import calibrate
    from nalln.loihi.emulator import agreement, emulate

    plan = lower(Artefact([graph(kind)], [], {}), 6)
    qp = calibrate(plan, inputs(16, seed=2))
    # a CubaLIF keeps half its current per step: Lava's du + 1 = 2048 (u * 2048 >> 12)
    assert [q.du for q in qp.stages[:2]] == [2047 if kind == "CubaLIF" else 4095] * 2
    x = inputs(3)
    em = emulate(qp, x).trace
    got = run_lava(qp, x).trace
    ref = run_plan(plan, x)
    for k in em.spikes:
        assert torch.equal(got.spikes[k], em.spikes[k]), (kind, k)
        assert agreement(em.spikes[k], ref.spikes[k]) >= 0.9, (kind, k)


@pytest.mark.parametrize("readout", ["LI", "I"])
def test_readouts_equal_the_nir_equations(readout):
    g = graph("IF", readout=readout)
    x = inputs()
    trace = run_plan(lower(Artefact([g], [], {}), 6), x)
    want_out, _ = interpret(g, x.double().numpy())
    assert np.allclose(trace.outputs.numpy(), want_out, atol=1e-9)
    assert float(np.abs(want_out).max()) > 0.1 and not np.allclose(want_out[-1], want_out[0])


@pytest.mark.norse
@pytest.mark.parametrize("readout", ["LI", "I"])
def test_norse_readouts_equal_the_reference(readout):
    from nalln.conversion.norse_backend import NorseNetwork

    art = Artefact([graph("LIF", readout=readout)], [], {})
    x = inputs()
    want = run_plan(lower(art, 6), x)
    got = NorseNetwork(art).run(x, 6)
    assert set(got.spikes) == {"n1", "n2"}
    assert torch.allclose(got.outputs.double(), want.outputs, atol=1e-4)


def test_a_node_after_a_readout_is_refused_by_name():
    """LI and Integrator readouts run on every back-end (tests/conversion/test_readouts.py);
    only as the last layer."""
    g = graph("IF")
    g.nodes["n2"] = nir.I(r=np.ones(6))
    with pytest.raises(NallnError, match="node 'fc2' follows readout 'n2'"):
        lower(Artefact([g], [], {}), 2)


def test_cuba_lif_bias_goes_through_the_current():
    """Lava and Loihi add ``bias_mant`` to the membrane; a CubaLIF's bias must decay with its
    current, so it becomes a bias column from an always-on neuron (no bias_mant), which netx
    cannot hold (one line naming the layer)."""
    from nalln.conversion.lava_backend import lava_network
    from nalln.conversion.netx import netx_refusal
    from nalln.loihi.calibration import calibrate

    plan = lower(Artefact([graph("CubaLIF")], [], {}), 6)
    layers = lava_network(plan).layers
    assert not np.any(layers[0].bias) and [d.from_step for d in layers[0].drives] == [0]
    qp = calibrate(plan, inputs(8))
    assert not np.any(qp.stages[0].bias) and len(qp.stages[0].drives) == 1
    assert netx_refusal(qp).startswith("netx cannot hold layer 'n1': its bias enters the")
    no_bias = calibrate(lower(Artefact([graph("CubaLIF", bias=False)], [], {}), 6), inputs(8))
    assert netx_refusal(no_bias) is None


def test_scale_varying_over_the_map_is_refused():
    g = graph("LIF")
    g.nodes["scale_in"] = nir.Scale(scale=np.random.default_rng(0).random((2, 8, 8)))
    with pytest.raises(NallnError, match="Scale node 'scale_in' .* vary over H and W"):
        lower(Artefact([g], [], {}), 2)


def test_a_recorded_reset_rule_is_carried_and_an_unknown_one_refused():
    """Subtraction (Sinabs, Norse) is a semantic choice now (tests/conversion/test_producers.py
    proves it against the producers); a rule nalln does not know is one line."""
    g = graph("IF")
    g.nodes["n2"].metadata = {"reset": "subtract"}
    plan = lower(Artefact([g], [], {}), 2)
    assert {n.name: n.reset for n in plan.neurons}["n2"] is ResetRule.SUBTRACT
    g.nodes["n2"].metadata = {"reset": "to_threshold"}
    with pytest.raises(NallnError, match="IF node 'n2' records reset 'to_threshold', which"):
        lower(Artefact([g], [], {}), 2)


def test_unsupported_node_message_reads_right(tmp_path):
    from nalln.conversion.nir_io import chain_of

    g = graph("IF")
    six = np.ones(6)
    g.nodes["n2"] = nir.CubaLI(tau_syn=six, tau_mem=six, r=six, v_leak=0 * six)
    with pytest.raises(NallnError, match="node 'n2' is a CubaLI, which nalln cannot simulate"):
        chain_of(g)
    assert [article(w) for w in ("IF", "CubaLIF", "Delay", "I")] == ["an", "a", "a", "an"]
