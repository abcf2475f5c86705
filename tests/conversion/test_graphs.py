"""Graphs with branches, merges and Delay nodes (issue 13, part 2), beyond chains.

The two fixtures (``nir_api_skip_merge``: a skip connection merging paths of different depth
into one IF; ``nir_api_delay``: one branch read through a per-neuron Delay) carry their own
simulation by NIR's equations (``make_fixtures.py``, ``dag_equations``); the reference, Norse and
Lava float reproduce it exactly in ``test_producers.py`` (they are in its lists). Here: what the
graph structure adds - the plan, the alignment on Lava, the Loihi fixed point bit for bit, netx's
refusal, and the bad inputs.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from nalln.conversion.nir_io import Artefact, read_artefact
from nalln.conversion.plan import lower
from nalln.errors import NallnError
from nalln.ir.plan import PLAN_INPUT
from nalln.ir.reference import run_plan

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "producers"
DAGS = ("nir_api_skip_merge", "nir_api_delay")


def load(name: str):
    with np.load(HERE / f"{name}.npz") as f:
        return torch.from_numpy(f["x"]), f["spikes"], int(f["steps"])


def graph(name: str) -> nir.NIRGraph:
    return nir.read(HERE / f"{name}.nir", type_check=False)


def plan_of(name: str):
    _, _, steps = load(name)
    return lower(read_artefact(HERE / f"{name}.nir"), steps)


def test_a_merge_is_one_population_summing_its_synapses():
    plan = plan_of("nir_api_skip_merge")
    assert [st.name for st in plan.stages] == ["lif1", "lif2", "if_out"]
    last = plan.stages[-1]
    assert [s.source for s in last.synapses] == ["fc_b", "skip"]
    assert last.synapse.reads is None and last.merged[0].reads == "lif1"
    assert plan.levels() == {PLAN_INPUT: -1, "lif1": 0, "lif2": 1, "if_out": 2}
    assert not plan.is_chain
    # the Delay: whole steps per neuron on the synapse it feeds
    d = plan_of("nir_api_delay").stages[-1].synapse
    assert d.source == "late" and d.delay.tolist() == [0, 1, 2, 3, 1, 2, 3, 0]


def test_a_chain_lowers_as_it_always_did(make_foreign):
    plan = lower(Artefact([make_foreign()], [], {"num_steps": 3}))
    assert plan.is_chain
    assert all(s.reads is None and s.delay is None for st in plan.stages for s in st.synapses)
    assert all(not st.merged for st in plan.stages)


@pytest.mark.parametrize("name", DAGS)
def test_each_edge_matters(name):
    """Without the skip (or the delay) the fixture's spikes differ: the merge and the delay
    are really computed, not passed by luck."""
    x, spikes, steps = load(name)
    g = graph(name)
    if name == "nir_api_skip_merge":
        g.nodes.pop("skip")
        g.edges = [e for e in g.edges if "skip" not in e]
    else:
        g.nodes.pop("delay")
        g.edges = [e for e in g.edges if "delay" not in e] + [("lif1", "late")]
    got = run_plan(lower(Artefact([g], [], {}), steps), x).outputs.transpose(0, 1).numpy()
    assert (got != spikes).sum() > 0


@pytest.mark.norse
def test_nirtorch_alone_sums_a_skip_one_step_late():
    """nirtorch 2.6 runs nodes depth-first: the IF runs before 'skip' and sums its previous
    step's current. nalln orders the executor topologically (then it is exact:
    test_producers)."""
    import nirtorch

    from nalln.conversion.norse_backend import NorseNetwork

    x, spikes, steps = load("nir_api_skip_merge")
    art = read_artefact(HERE / "nir_api_skip_merge.nir")
    net = NorseNetwork(art)
    ours = net.run(x, steps).outputs.transpose(0, 1).numpy()
    assert (ours == spikes).all()
    order = [n.name for n in net.segments[0].execution_order]
    assert order.index("skip") < order.index("if_out")
    dfs = nirtorch.graph_utils.trace_execution
    first = next(iter(net.segments[0].graph.inputs))
    names = [n.name for n in dfs(first, lambda n: n.outgoing_nodes.keys())]
    assert names.index("if_out") < names.index("skip")  # what nirtorch would have run


@pytest.mark.lava
@pytest.mark.parametrize("name", DAGS)
def test_lava_fixed_point_equals_the_emulator_bit_for_bit(name):
    """The merge's second synapse on the population's scale (its own weight exponent), the
    shorter path aligned and the delay line windowed, in Lava's bit-accurate models."""
    from nalln.conversion.lava_backend import run_lava
    from nalln.loihi.calibration import calibrate
    from nalln.loihi.emulator import agreement, emulate

    x, _, _ = load(name)
    plan = plan_of(name)
    qp = calibrate(plan, x)
    em = emulate(qp, x[:2])
    lava = run_lava(qp, x[:2]).trace
    assert set(lava.spikes) == set(em.trace.spikes) == {st.name for st in plan.stages}
    for k, s in em.trace.spikes.items():
        assert torch.equal(lava.spikes[k], s), k
    assert int(em.trace.outputs.sum()) > 0 and torch.equal(lava.outputs, em.trace.outputs)
    ref = run_plan(plan, x)
    full = emulate(qp, x).trace
    assert agreement(full.spikes["if_out"], ref.spikes["if_out"]) >= 0.97


def test_netx_refuses_a_merge_in_one_line():
    from nalln.conversion.netx import netx_refusal
    from nalln.loihi.calibration import calibrate

    x, _, _ = load("nir_api_skip_merge")
    why = netx_refusal(calibrate(plan_of("nir_api_skip_merge"), x))
    assert why == (
        "netx cannot hold layer 'if_out': it sums 2 synapses (a merge); a netx file is a "
        "sequence of layers, each reading only the one before"
    )
    x, _, steps = load("nir_api_delay")
    chain = graph("nir_api_delay")  # a chain with a Delay: no merge, still no netx layer
    chain.nodes.pop("now")
    chain.edges = [e for e in chain.edges if "now" not in e]
    qp = calibrate(lower(Artefact([chain], [], {}), steps), x)
    assert netx_refusal(qp) == (
        "netx cannot hold layer 'if_out': it reads its input through a Delay; netx layers have "
        "no per-element delay"
    )


def test_fixed_point_refuses_a_graded_skip_by_name():
    g = graph("nir_api_skip_merge")
    g.nodes["skip"] = nir.Linear(weight=np.ones((4, 5)))
    g.edges = [e for e in g.edges if e != ("lif1", "skip")] + [("input", "skip")]
    x, _, steps = load("nir_api_skip_merge")
    plan = lower(Artefact([g], [], {}), steps)
    run_plan(plan, x)  # float runs it
    from nalln.loihi.calibration import calibrate

    with pytest.raises(NallnError, match="synapse 'skip' reads the graded input beside the first"):
        calibrate(plan, x)


def test_a_cycle_without_a_neuron_is_one_line(run_cli, tmp_path, capsys):
    g = graph("nir_api_skip_merge")
    g.nodes["a"] = nir.Linear(weight=np.eye(4))
    g.nodes["b"] = nir.Linear(weight=np.eye(4))
    g.edges = [e for e in g.edges if e != ("fc_b", "if_out")]
    g.edges += [("fc_b", "a"), ("a", "b"), ("b", "a"), ("b", "if_out")]
    path = tmp_path / "cycle.nir"
    nir.write(path, g)
    out = tmp_path / "out"
    x = HERE / "nir_api_skip_merge.npz"
    code = run_cli(
        ["simulate", str(path), "--backend", "norse", "--inputs", str(x), "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and not out.exists()
    assert "edge ('b', 'a') closes a cycle (a -> b -> a) with no neuron on it" in err


def test_shapes_that_do_not_meet_at_a_merge_say_both(run_cli, tmp_path, capsys):
    g = graph("nir_api_skip_merge")
    g.nodes["skip"] = nir.Linear(weight=np.ones((3, 8)))
    path = tmp_path / "merge.nir"
    nir.write(path, g)
    out = tmp_path / "out"
    code = run_cli(["convert", str(path), "--to", "nir", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and not out.exists()
    assert (
        "shapes do not meet at node 'if_out', which sums its inputs: 'fc_b' gives [4] but "
        "'skip' gives [3]"
    ) in err


def test_a_delay_that_is_not_whole_steps_is_refused():
    g = copy.deepcopy(graph("nir_api_delay"))
    g.nodes["delay"] = nir.Delay(delay=np.full(8, 1.5e-3))
    with pytest.raises(NallnError, match="Delay node 'delay': delays \\[1.5\\] steps"):
        lower(Artefact([g], [], {}), 8)


def conv_residual(seed: int = 5) -> nir.NIRGraph:
    """A residual conv block: ``Conv -> LIF -> {Conv -> LIF -> Conv, identity} -> LIF`` (the
    identity skip goes straight into the last LIF: lowered as a 1x1 eye conv)."""
    rng = np.random.default_rng(seed)
    dt = 1e-3

    def lif(shape, th):
        k = np.ones(shape)
        return nir.LIF(
            tau=2e-3 * k, r=k, v_leak=0 * k, v_threshold=th * k, v_reset=0 * k, metadata={"dt": dt}
        )

    def conv(ci, co, scale, bias=True):
        return nir.Conv2d(
            input_shape=(6, 6),
            weight=rng.normal(0.1, scale, (co, ci, 3, 3)),
            stride=1,
            padding=1,
            dilation=1,
            groups=1,
            bias=rng.normal(0.1, 0.1, co) if bias else np.zeros(co),
        )

    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 6, 6])}),
        "c1": conv(2, 3, 1.0),
        "l1": lif((3, 6, 6), 0.3),
        "c2": conv(3, 3, 0.8),
        "l2": lif((3, 6, 6), 0.3),
        "c3": conv(3, 3, 0.8, bias=False),
        "l3": lif((3, 6, 6), 0.5),
        "output": nir.Output(output_type={"output": np.array([3, 6, 6])}),
    }
    edges = [("input", "c1"), ("c1", "l1"), ("l1", "c2"), ("c2", "l2"), ("l2", "c3")]
    edges += [("c3", "l3"), ("l1", "l3"), ("l3", "output")]
    return nir.NIRGraph(nodes, edges, type_check=False)


@pytest.mark.lava
def test_a_conv_residual_block_runs_exactly_on_lava_float_and_fixed():
    from nalln.conversion.lava_backend import run_lava
    from nalln.loihi.calibration import calibrate
    from nalln.loihi.emulator import agreement, emulate

    plan = lower(Artefact([conv_residual()], [], {}), 6)
    last = plan.stages[-1]
    assert [s.source for s in last.synapses] == ["c3", "l3.skip.l1"]
    assert last.merged[0].kind == "conv" and last.merged[0].weight.shape == (3, 3, 1, 1)
    x = torch.from_numpy(np.random.default_rng(1).normal(0.5, 1.0, (6, 2, 6, 6)))
    ref = run_plan(plan, x)
    assert all(0.02 < float(s.double().mean()) < 0.9 for s in ref.spikes.values())
    lava = run_lava(plan, x[:3]).trace
    for k, s in ref.spikes.items():
        assert torch.equal(lava.spikes[k], s[:, :3]), k
    qp = calibrate(plan, x)
    assert qp.stages[-1].merged[0].exp == 0  # a merged conv shares S without an exponent
    em = emulate(qp, x[:3]).trace
    fixed = run_lava(qp, x[:3]).trace
    for k, s in em.spikes.items():
        assert torch.equal(fixed.spikes[k], s), k
    full = emulate(qp, x).trace
    assert min(agreement(full.spikes[k], ref.spikes[k]) for k in ref.spikes) >= 0.97


@pytest.mark.norse
def test_a_conv_residual_block_runs_exactly_on_norse():
    from nalln.conversion.norse_backend import NorseNetwork

    g = conv_residual()
    plan = lower(Artefact([g], [], {}), 6)
    x = torch.from_numpy(np.random.default_rng(1).normal(0.5, 1.0, (6, 2, 6, 6)))
    ref = run_plan(plan, x)
    got = NorseNetwork(Artefact([conv_residual()], [], {})).run(x, 6)
    for k, s in ref.spikes.items():
        assert torch.equal(got.spikes[k], s), k
