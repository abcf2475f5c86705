"""On-chip SE gates in `hardware fit` and `energy report`: the counted neurons and synapses are
those of the Lava process graph `lava_backend` builds, the counted events those of a hand count
on a tiny block, and the pricing is counts x cited constants (graded events as a range)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nalln.energy.chip_costs import chip_costs
from nalln.energy.chip_fit import fit_network, structure
from nalln.energy.cost_models import estimate
from nalln.energy.counting import count_model
from nalln.energy.modes import Bound, Dataflow
from nalln.hardware_targets.registry import load_registry
from nalln.loihi.onchip_se import GATE_BITS, GATE_ONE, OnchipSE, choose_scales, gate_from_float
from nalln.models.blocks import SpikingDSBlock
from nalln.models.neuron import LIFParameters

T, CIN, C, HW = 4, 4, 8, 4  # 4x4 maps; hidden = C / 4 = 2
SCALE = 40.0


def _gate(lag: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(0, 1, (C // 4, C)), np.abs(rng.normal(0, 0.5, C // 4)) + 0.2
    w2, b2 = rng.normal(0, 1, (C, C // 4)), rng.normal(0, 0.5, C)
    s = choose_scales("b.pw_lif", SCALE, HW * HW, w1, w2, lag)
    return gate_from_float(s, w1, b1, w2, b2, check=False)


class OneBlock(nn.Module):
    """A stem-less network: the image repeated T times into one block with on-chip SE."""

    def __init__(self, lag: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.num_steps = T
        self.block = SpikingDSBlock(
            CIN, C, stride=1, num_steps=T, lif=LIFParameters(v_th=0.3), se_ratio=4
        )
        with torch.no_grad():
            for p in self.block.parameters():
                p.add_(0.2 * torch.sign(p))  # no zero weights: every column counts
        self.block.eval()
        se = self.block.se
        w1, w2 = (f.weight.detach().double().numpy() for f in (se.fc1, se.fc2))
        s = choose_scales("block.pw_lif", SCALE, HW * HW, w1, w2, lag)
        self.block.se = OnchipSE(se, s, T)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x.repeat(self.num_steps, 1, 1, 1))


def _images(n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, CIN, HW, HW, generator=g) * 3


@pytest.mark.lava
def test_counted_parts_equal_the_lava_process_graph():
    """Neurons, synapses and the delay of OnchipGate.cost (what `hardware fit` places) equal
    the shapes and the Dense weights' nonzeros of the processes `_onchip_gate` builds."""
    from nalln.conversion import lava_compat

    lava_compat.import_lava()
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.prodneuron.process import ProdNeuron

    from nalln.conversion import lava_backend
    from nalln.conversion.lava_processes.processes import (
        ChannelSum,
        CurrentDelay,
        GradedReLU,
        HardSigmoidGate,
    )

    for lag in (0, 1, 2):
        og = _gate(lag)
        shape = (HW, HW, C)  # Lava's (W, H, C)
        w = np.ones((C, 1, 1, CIN), np.int32)
        conv = Conv(weight=w, input_shape=(HW, HW, CIN), num_message_bits=24)
        procs: list = []
        lava_backend._onchip_gate(og, conv.a_out, shape, np.zeros(C), T, 2, procs)
        kinds = {type(p): p for p in procs}
        dense = [p for p in procs if type(p) is Dense]
        fc1, fc2, bcast = (np.asarray(d.weights.init) for d in dense)
        c = og.cost(in_channels=CIN)
        # the spike counts (C_in compartments fed by the conv's HW positions) and the copy of
        # the pointwise weights, read off the pointwise Conv process
        assert c["neurons_count"] == conv.s_in.shape[-1]
        assert c["synapses_count"] == int(np.prod(conv.s_in.shape))
        assert c["synapses_pointwise_copy"] == int(np.count_nonzero(conv.weight.init))
        assert c["neurons_accumulator"] == kinds[ChannelSum].s_out.shape[0]
        assert c["neurons_relu"] == kinds[GradedReLU].s_out.shape[0]
        assert c["neurons_hard_sigmoid"] == kinds[HardSigmoidGate].s_out.shape[0]
        assert c["neurons_product"] == int(np.prod(kinds[ProdNeuron].s_out.shape))
        assert c["synapses_fc1"] == fc1.size and np.array_equal(fc1, og.w1)
        assert c["synapses_fc2"] == fc2.size and np.array_equal(fc2, og.w2)
        assert c["synapses_broadcast"] == int(np.count_nonzero(bcast))
        assert c["synapses_product_to_lif"] == int(np.prod(kinds[ProdNeuron].s_out.shape))
        assert c["main_path_delay_steps"] == kinds[CurrentDelay].proc_params["delay"] == 4 - lag
        assert len(procs) == 8  # and no other process: nothing else to place


def test_fit_places_every_part_and_keeps_the_totals():
    """`hardware fit` rows for the gate: each part's neurons and fan-in, the pointwise synapses
    moved to the product neurons, one synapse per gated LIF; totals = the layer's own + cost."""
    model = OneBlock()
    counts = structure(model, HW, CIN)
    (G,) = counts.gates
    reg = load_registry()
    res = fit_network(counts, reg.get("loihi2"))
    rows = {r.layer: r for r in res.layers}
    H = C // 4
    expect = {
        "block.se.count": (CIN, HW * HW),
        "block.se.sum": (C, CIN),
        "block.se.fc1": (H, C),
        "block.se.fc2": (C, H),
        "block.se.product": (C * HW * HW, CIN + 1),
        "block.se.delay": (0, 0),
        "block.pw_lif": (C * HW * HW, 1),
    }
    for name, (neurons, fan_in) in expect.items():
        assert (rows[name].neurons, rows[name].fan_in) == (neurons, fan_in), name
        assert rows[name].cores == (1 if neurons else 0) and rows[name].feasible
    order = [r.layer for r in res.layers]
    assert order.index("block.dw_lif") < order.index("block.se.count") < order.index("block.pw_lif")
    cost = G.cost
    pw = counts.layer("block.pw.conv")
    own_neurons = sum(P.neurons for P in counts.populations)
    own_synapses = sum(
        r.synapses for r in fit_network(_without_gates(counts), reg.get("loihi2")).layers
    )
    assert res.neurons == own_neurons + cost["neurons"]
    assert res.synapses == own_synapses + cost["synapses"]
    assert rows["block.se.product"].synapses == pw.fan_in * C * HW * HW + cost["synapses_broadcast"]
    # Loihi 1's 1,024 compartments and 4,096 input axons per core bind the same rows
    res1 = fit_network(counts, reg.get("loihi"))
    assert res1.feasible and res1.cores >= res.cores


def _without_gates(counts):
    from dataclasses import replace

    return replace(counts, gates=[])


def _hand_count(model: OneBlock, x: torch.Tensor) -> dict[str, float]:
    """Per inference, from the block's own tensors (hooks of this test, not the counter's) and
    the module docstring's integer formulas in numpy."""
    seen: dict[str, torch.Tensor] = {}
    blk = model.block
    h1 = blk.pw.register_forward_pre_hook(lambda m, i: seen.__setitem__("s", i[0].detach()))
    h2 = blk.pw.register_forward_hook(lambda m, i, o: seen.__setitem__("cur", o.detach()))
    h3 = blk.se.register_forward_hook(lambda m, i, o: seen.__setitem__("y", o.detach()))
    with torch.no_grad():
        model(x)
    for h in (h1, h2, h3):
        h.remove()
    og = blk.se.integer_gate()
    s = og.scales
    n = x.shape[0]
    spikes = seen["s"].numpy().reshape(T, n, CIN, HW, HW)
    cur = np.rint(seen["cur"].double().numpy() * s.scale).astype(np.int64).reshape(T, n, C, HW, HW)
    q = cur.sum(axis=(-1, -2)) >> s.sh0
    h = np.maximum(q @ og.w1.T + og.b1, 0) >> s.sh1
    g = np.clip((h @ og.w2.T + og.b2) >> s.sh2, 0, GATE_ONE)
    g0 = og.rest_gate()
    gl = np.concatenate([np.broadcast_to(g0, (s.lag, n, C)), g[: T - s.lag]]) if s.lag else g
    y = (cur * gl[..., None, None]) >> GATE_BITS
    # the module computes exactly this current
    assert np.array_equal(y, np.rint(seen["y"].double().numpy() * s.scale).reshape(y.shape))
    cnt = spikes.sum(axis=(-1, -2))
    w_pw = blk.pw[0].weight.detach().numpy().reshape(C, CIN)
    return {
        "count": np.count_nonzero(spikes) / n,
        "sum": float(((cnt != 0) * (w_pw != 0).sum(0)).sum()) / n,
        "fc1": float(((q != 0) * (og.w1 != 0).sum(0)).sum()) / n,
        "fc2": float(((h != 0) * (og.w2 != 0).sum(0)).sum()) / n,
        "broadcast": np.count_nonzero(gl) * HW * HW / n,
        "product": np.count_nonzero(y) / n,
    }


@pytest.mark.parametrize("lag", [0, 1])
def test_counted_events_equal_a_hand_count(lag):
    model = OneBlock(lag)
    x = _images()
    counts = count_model(model, x, batch_size=2)  # two batches: the counts add up
    (G,) = counts.gates
    got = G.summary(counts.n)
    hand = _hand_count(model, x)
    assert got["binary_events"]["count"] == pytest.approx(hand["count"])
    for part in ("sum", "fc1", "fc2", "broadcast", "product"):
        assert got["graded_events"][part] == pytest.approx(hand[part]), part
    assert hand["count"] > 0 and hand["fc1"] > 0 and hand["product"] > 0  # activity to count
    assert got["neuron_updates"] == (CIN + C + C // 4 + C + C * HW * HW) * T
    assert got["lag"] == lag and got["main_path_delay_steps"] == 4 - lag


def test_gate_counts_of_shards_merge_to_one_pass():
    """torchrun shards: the gates' counts add up as the layers' do."""
    from nalln.energy.counting import merge_counts

    model, x = OneBlock(), _images(4)
    whole = count_model(model, x, batch_size=4).gates[0]
    merged = merge_counts([count_model(model, x[:1]), count_model(model, x[1:])]).gates[0]
    for part, v in whole.events.items():
        assert np.array_equal(merged.events[part], v), part
    for part, v in whole.sent.items():
        assert np.array_equal(merged.sent[part], v), part


def test_gate_energy_is_counts_times_cited_constants():
    """loihi2 (PROXY loihi) ops+memory: binary and graded events at e_synop, neuron updates at
    e_neuron_update, messages at e_spike; the high end adds e_synaptic_update - e_synop per
    graded event. The ANN twin computes the SE blocks in float (fc1/fc2 MACs, pooling)."""
    from nalln.energy.baseline import relu_twin
    from nalln.energy.onchip_gates import totals

    model = OneBlock()
    counts = count_model(model, _images(), batch_size=4)
    reg = load_registry()
    chip, host = reg.get("loihi2"), reg.get("asic45-int8")
    loihi = reg.get("loihi")
    est = estimate(counts, chip, "ops+memory", reg, host=host, dataflow=Dataflow.REUSE)
    kinds = est.by_what()
    t = totals(counts)
    e = {k: loihi.value(k) for k in ("e_synop", "e_neuron_update", "e_spike", "e_synaptic_update")}
    assert kinds["on-chip SE: synaptic events (binary)"] == pytest.approx(
        t["binary_events"] * e["e_synop"]
    )
    assert kinds["on-chip SE: synaptic events (graded)"] == pytest.approx(
        t["graded_events"] * e["e_synop"]
    )
    assert kinds["on-chip SE: neuron updates"] == pytest.approx(
        t["neuron_updates"] * e["e_neuron_update"]
    )
    assert kinds["on-chip SE: graded messages sent"] == pytest.approx(t["messages"] * e["e_spike"])
    assert not any("SE gate" in k or "SE current" in k for k in kinds)  # nothing on the host
    fit = fit_network(counts, chip)
    hi = chip_costs(counts, chip, loihi, host, fit, Bound.HIGH)
    lo = chip_costs(counts, chip, loihi, host, fit, Bound.LOW)
    extra = sum(x.pj for x in hi.terms if "graded events at the high" in x.what)
    assert extra == pytest.approx(t["graded_events"] * (e["e_synaptic_update"] - e["e_synop"]))
    assert not any("graded" in x.what for x in lo.terms)
    assert any("graded (24-bit) message" in n for n in hi.notes)
    # the same counts on an ASIC running the SNN (adds / MACs) and on a GPU (dense FLOPs)
    a = estimate(counts, host, "ops", reg).by_what()
    assert a["on-chip SE: MACs (graded)"] == pytest.approx(t["graded_events"] * host.value("e_mac"))
    gpu = reg.get("gpu-t4")
    d = estimate(counts, gpu, "dense", reg).by_what()["on-chip SE gate FLOPs"]
    per_step = 2 * C * HW * HW + 4 * C * (C // 4)
    assert d == pytest.approx(per_step * T * gpu.value("pj_per_flop_fp32"))
    ann = count_model(relu_twin(model), _images(), batch_size=4, network="ann")
    assert {L.name for L in ann.layers} >= {"block.se.fc1", "block.se.fc2"} and not ann.gates
    assert [E.kind for E in ann.extras] == ["se_gate"]


@pytest.fixture(scope="module")
def onchip_run(tiny_run, tmp_path_factory):
    """The tiny run fine-tuned with --se onchip (one short epoch)."""
    from nalln.deploy.finetune_fixed_point import FinetuneConfig, finetune_fixed_point

    out = tmp_path_factory.mktemp("onchip-cost") / "fp"
    cfg = FinetuneConfig(se="onchip", epochs=1, calibration=8, train_images=8, batch_size=4)
    finetune_fixed_point(tiny_run, out, config=cfg, progress=False, echo=lambda _m: None)
    return out


def test_cli_fit_and_report_count_the_runs_own_gates(cli, onchip_run, synth_root, tmp_path):
    """`hardware fit` and `energy report` on a --se onchip run: every gate of the run's grid
    is placed and counted, its neurons and synapses those of the run's integer gates."""
    import json

    from nalln.loihi.grid import recorded_grid
    from nalln.models.blocks import se_blocks
    from nalln.runs import load_model

    loaded = load_model(onchip_run)
    blocks = se_blocks(loaded.model)
    assert len(recorded_grid(loaded.run_meta).onchip) == len(blocks) > 0
    code, out, err = cli("hardware", "fit", "--target", "loihi2", str(onchip_run), "--json")
    assert code == 0, err
    fit = json.loads(out)
    names = [L["layer"] for L in fit["layers"]]
    for b in blocks:
        for part in ("count", "sum", "fc1", "fc2", "product", "delay"):
            assert f"{b}.se.{part}" in names
    assert any("programmable-neuron" in n for n in fit["notes"])
    rep = tmp_path / "rep"
    code, out, err = cli(
        "energy", "report", str(onchip_run), "--data", str(synth_root), "--targets", "loihi2",
        "--n", "4", "--out", str(rep), "-q",
    )  # fmt: skip
    assert code == 0, err
    assert "on-chip SE gates" in out
    d = json.loads((rep / "energy.json").read_text())
    gates = d["snn"]["onchip_se"]
    assert [g["block"] for g in gates] == list(blocks)
    for g, blk in zip(gates, blocks.values(), strict=True):
        cost = blk.se.integer_gate().cost(blk.pw.conv.in_channels)
        assert g["neurons_total"] == cost["neurons"] and g["synapses_total"] == cost["synapses"]
    assert d["snn"]["extra_ops"] == [] or all(e["kind"] != "se_gate" for e in d["snn"]["extra_ops"])
    m = d["targets"]["loihi2"]["models"]["ops+memory"]
    assert m["snn_low"]["by_kind_pj"]["on-chip SE: synaptic events (graded)"] > 0
    assert m["fit"]["cores"] == fit["cores"]
    assert any("On-chip SE" in c for c in d["caveats"])
