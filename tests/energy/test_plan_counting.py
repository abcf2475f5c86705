"""Counting a NIR graph from its deployment plan (nalln.energy.plan_counting): exact numbers on
hand-built graphs, and agreement with the torch-hook counter on NeurALLNet's own export."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch

from nalln.conversion.nir_io import Artefact, read_artefact, write_artefact
from nalln.conversion.plan import lower
from nalln.energy.chip_fit import fit_network
from nalln.energy.plan_counting import count_plan, folded_pools, plan_structure
from nalln.hardware_targets import load_registry
from nalln.ir.reference import run_plan
from nalln.models.naming import node_name


def test_hand_computed_two_layer_graph(graphs) -> None:
    plan = lower(Artefact([graphs.two_layer()], [], {"num_steps": 4}))
    x = torch.tensor([[1.0, 0.0, 2.0]])
    snn, ann, out = count_plan(plan, x)
    fc1, fc2 = snn.layers
    # held input: the first synapse is computed once; x has 2 nonzeros meeting 3 + 1 nonzero
    # weights (column 0 has 3, column 2 has 1; column 1's 2 weights meet x_1 = 0)
    assert fc1.once and not fc1.spike_input and not fc1.binary
    assert fc1.mac.tolist() == [4, 0, 0, 0] and fc1.ac.sum() == 0
    assert fc1.dense.tolist() == [12, 0, 0, 0] and fc1.in_nonzero.tolist() == [2, 0, 0, 0]
    # the spikes the docstring derives by hand
    if1, if2 = snn.populations
    assert if1.spikes.tolist() == [1, 2, 1, 2] and if2.spikes.tolist() == [1, 2, 1, 2]
    # fc2: a spike of neuron 0 reaches 2 nonzero weights, of neuron 1 one: 2, 3, 2, 3 ACs
    assert fc2.spike_input and fc2.binary and fc2.population == "if2"
    assert fc2.ac.tolist() == [2, 3, 2, 3] and fc2.mac.sum() == 0
    assert fc2.dense.tolist() == [8, 8, 8, 8]
    t = snn.totals
    assert (t["synaptic_acs"], t["synaptic_macs"], t["spikes"]) == (10, 4, 12)
    assert t["neurons"] == 6 and t["membrane_updates"] == 24 and t["firing_rate"] == 12 / 24
    # the reference's output is the last population's spikes
    assert out[:, 0].sum(0).tolist() == [4, 2]
    # ReLU twin, one step: relu([1, .5, 0, -1]) has 2 nonzeros -> 2 + 1 MACs in fc2
    assert ann.num_steps == 1 and ann.layers[0].mac.tolist() == [4]
    assert ann.layers[1].mac.tolist() == [3] and ann.layers[1].dense.tolist() == [8]


def test_per_step_inputs_count_the_first_layer_every_step(graphs) -> None:
    plan = lower(Artefact([graphs.two_layer()], [], {}), 3)
    x = torch.tensor([[[1.0, 0, 0], [0, 0, 0], [1, 0, 1]]])  # [N=1, T=3, 3] events
    snn, ann, _ = count_plan(plan, x)
    fc1 = snn.layers[0]
    assert not fc1.once and fc1.binary  # 0/1 events: ACs
    assert fc1.ac.tolist() == [3, 0, 4] and fc1.dense.tolist() == [12, 12, 12]
    graded = count_plan(plan, x * 0.5)[0].layers[0]
    assert graded.mac.tolist() == [3, 0, 4] and graded.ac.sum() == 0  # graded events: MACs
    # the twin sees the mean over the steps: [2/3, 0, 1/3] -> 3 + 1 MACs
    assert ann.layers[0].mac.tolist() == [4]


def test_recurrent_synapse_counts_previous_step_spikes(graphs) -> None:
    g = graphs.recurrent()
    plan = lower(Artefact([g], [], {}), 8)
    x = torch.randn(5, 8, 5, generator=torch.Generator().manual_seed(3)) * 1.5
    snn, ann, _ = count_plan(plan, x, batch_size=2)
    names = [L.name for L in snn.layers]
    assert names == ["fc_in", "w_rec", "fc_out"]  # the loop right after its population's synapse
    rec = snn.layer("w_rec")
    assert rec.role == "recurrent" and rec.spike_input and rec.population == "cell"
    s = run_plan(plan, x).spikes["cell"].double()  # [T, B, 6]
    assert 0.05 < float(s.mean()) < 0.95
    nnz = torch.as_tensor((g.nodes["w_rec"].weight != 0).sum(0), dtype=torch.float64)  # per input
    want = [0.0] + [float((s[t - 1] * nnz).sum()) for t in range(1, 8)]
    assert rec.ac.tolist() == want and rec.mac.sum() == 0
    assert rec.dense.tolist() == [0.0] + [36.0 * 5] * 7  # nothing arrives at step 0
    assert snn.population("cell").spikes.tolist() == s.sum((1, 2)).tolist()
    assert "w_rec" not in [L.name for L in ann.layers]  # T = 1: the loop never delivers
    # the fit stores the loop's synapses with the population
    fit = fit_network(plan_structure(plan), load_registry().get("loihi"))
    cell = next(r for r in fit.layers if r.layer == "cell")
    assert cell.fan_in == 6 and cell.synapses == 36  # fc_in is on the host; w_rec: 6 each
    # the population's own updates are charged once (not again with the loop)
    from nalln.energy.cost_models import estimate

    reg = load_registry()
    est = estimate(snn, reg.get("asic45-int8"), "ops+memory", reg)
    leak = [t for t in est.terms if t.what == "leak multiplies"]
    assert [t.count for t in leak] == [6 * 8]


def test_folded_pooling_counts_the_folded_fan_out(graphs) -> None:
    g = graphs.pooled()
    art = Artefact([g], [], {"num_steps": 5})
    assert folded_pools(art) == {"fc": "pool"}
    plan = lower(art)
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    snn, _, _ = count_plan(plan, x)
    fc = snn.layer("fc")
    assert fc.in_shape == (2, 4, 4) and fc.weights == 3 * 32  # the folded layer
    s = run_plan(plan, x).spikes["lif1"].double()  # [T, B, 2, 4, 4]
    assert 0.05 < float(s.mean()) < 0.95
    # each spike at (c, h, w) reaches the nonzero weights of pooled input (c, h//2, w//2)
    nnz = torch.as_tensor((g.nodes["fc"].weight != 0).sum(0), dtype=torch.float64)
    per_input = nnz.reshape(2, 2, 2).repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert fc.ac.tolist() == [float((s[t] * per_input).sum()) for t in range(5)]
    assert fc.binary and fc.spike_input and snn.extras == []
    assert fc.dense.tolist() == [3 * 32 * 4.0] * 5


@pytest.fixture(scope="module")
def demo_model():
    """A random 64 px NeurALLNet (no training) with a low threshold, so every layer spikes."""
    from nalln.models.registry import create

    torch.manual_seed(0)
    cfg = {"image_size": 64, "width_multiplier": 0.25, "head_hidden": 16, "refine_channels": 64}
    model = create("neurallnet", **cfg, v_threshold=0.1).eval()
    x = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2
    return model, x


def _exported(model, x, se: str):
    from nalln.conversion.export import export_model
    from nalln.conversion.fold import mean_gates, static_se_model

    if se == "static":
        gates = mean_gates(model, x)
        return static_se_model(model, gates), export_model(model, se_mode="static", gates=gates)
    return model, export_model(model, se_mode=se)


@pytest.mark.parametrize("se", ["static", "hybrid"])
def test_agrees_with_the_torch_hooks_on_neurallnet(demo_model, se) -> None:
    """Every layer, population and extra op equal to the hook counter on the same inputs,
    except the head's GAP -> fc1, which lowering folds (checked exactly below)."""
    from nalln.energy.baseline import relu_twin
    from nalln.energy.counting import count_model

    model, x = demo_model
    reference, exported = _exported(model, x, se)
    with tempfile.TemporaryDirectory() as tmp:
        write_artefact(tmp, exported)
        art = read_artefact(tmp)  # what a file holds
    plan = lower(art)
    snn, ann, _ = count_plan(plan, x, batch_size=4)
    hooks = count_model(reference, x, batch_size=4)
    hooks_ann = count_model(relu_twin(reference), x, batch_size=4)
    by_name = {node_name(L.name): L for L in hooks.layers}
    # NIR node names; the side-car's layers keep the torch names of the SE block
    assert [node_name(L.name) for L in snn.layers] == list(by_name)
    for L in snn.layers:
        H = by_name[node_name(L.name)]
        if L.name == "head_fc1":
            continue
        assert (L.once, L.spike_input, L.binary) == (H.once, H.spike_input, H.binary), L.name
        for key in ("ac", "mac", "dense", "in_nonzero"):
            assert getattr(L, key).tolist() == getattr(H, key).tolist(), (L.name, key)
        assert (L.in_shape, L.out_shape, L.weights) == (H.in_shape, H.out_shape, H.weights)
    spiking = [P for P in snn.populations if P.spikes.sum() > 0]
    assert len(spiking) == len(snn.populations)  # every layer fires: the test is not vacuous
    for P, H in zip(snn.populations, hooks.populations, strict=True):
        assert P.name == node_name(H.name) and P.spikes.tolist() == H.spikes.tolist()
    ann_hooks = {node_name(L.name): L for L in hooks_ann.layers}
    for L in ann.layers:
        if L.name != "head_fc1":
            A = ann_hooks[node_name(L.name)]
            assert (L.mac.tolist(), L.dense.tolist()) == (A.mac.tolist(), A.dense.tolist())
    # SE side-car (hybrid): pooling adds and gate multiplies as the hooks count them
    extras = {E.name: (E.adds, E.muls) for E in hooks.extras if E.kind == "se_gate"}
    assert {E.name: (E.adds, E.muls) for E in snn.extras} == extras
    assert bool(extras) == (se == "hybrid")
    # head: the hooks see GAP -> fc1 on pooled spike counts (MACs per nonzero pooled value,
    # plus one pooling add per element); the plan's fc1 is folded over the 2x2 map: ACs, one
    # per (spike, nonzero weight), no pooling adds
    fc1, H = snn.layer("head_fc1"), by_name["head_fc1"]
    last = run_plan(plan, x).spikes["refine_pw_lif"].double()  # [T, B, C, 2, 2]
    assert fc1.in_shape == tuple(last.shape[2:]) and fc1.weights == 4 * H.weights
    assert fc1.spike_input and not H.spike_input and H.mac.sum() > 0
    w = torch.as_tensor(exported.segments[-1].nodes["head_fc1"].weight)
    per_channel = (w != 0).sum(0).double()  # fan-out of one pooled channel
    want = [float((last[t].sum((0, 2, 3)) * per_channel).sum()) for t in range(4)]
    assert fc1.ac.tolist() == want and fc1.mac.sum() == 0
    pooled_nz = (last.sum((3, 4)) != 0).double()  # [T, B, C]
    assert H.mac.tolist() == [float((pooled_nz[t] * per_channel).sum()) for t in range(4)]
    assert fc1.dense.sum() == 4 * H.dense.sum()
    assert [E.name for E in hooks.extras if E.kind == "gap"] == ["head.gap"]


def test_fit_of_the_export_equals_the_fit_of_the_model(demo_model) -> None:
    """`hardware fit` on NeurALLNet's graph places every population as on the torch model,
    except head_lif: its folded fc1 reads the last spikes on chip (4x the pooled fan-in)."""
    from nalln.conversion.export import export_model
    from nalln.energy.chip_fit import structure

    model, x = demo_model
    gates = {n: np.full(c, 0.5, np.float32) for n, c in _se_channels(model).items()}
    art = Artefact(export_model(model, se_mode="static", gates=gates).segments, [], {})
    target = load_registry().get("loihi")
    got = fit_network(plan_structure(lower(art, 4)), target)
    want = fit_network(structure(model, 64), target)
    assert [r.layer for r in got.layers] == [node_name(r.layer) for r in want.layers]
    for g, w in zip(got.layers, want.layers, strict=True):
        if g.layer == "head_lif":
            assert w.input.startswith("host") and g.input.startswith("spikes")
            assert g.fan_in == 4 * model.head.fc1.in_features and w.fan_in == 0
            continue
        assert (g.neurons, g.fan_in, g.synapses, g.per_core, g.cores, g.input) == (
            w.neurons, w.fan_in, w.synapses, w.per_core, w.cores, w.input
        ), g.layer  # fmt: skip


def _se_channels(model) -> dict[str, int]:
    from nalln.models.blocks import se_blocks

    return {n: b.se.fc1.in_features for n, b in se_blocks(model).items()}
