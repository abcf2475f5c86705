"""On-chip SE (SEMode.ONCHIP): the torch module, the integer reference (emulator) and the Lava
process graph compute the same gate, spike for spike, on a tiny network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nalln.errors import NallnError
from nalln.ir.plan import GateSpec, Neuron, Plan, Stage, Synapse
from nalln.loihi.arithmetic import round_input, run_stage
from nalln.loihi.emulator import emulate
from nalln.loihi.onchip_se import (
    OnchipScales,
    OnchipSE,
    choose_scales,
    gate_from_float,
    onchip_gate_int,
)
from nalln.loihi.quant_plan import QStage, QuantPlan

T, C, HW, HID = 8, 4, 6, 2


def _se(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    return (
        rng.normal(0, 1, (HID, C)),
        np.abs(rng.normal(0, 0.5, HID)) + 0.2,
        rng.normal(0, 1, (C, HID)),
        rng.normal(0, 0.5, C),
    )


def tiny_onchip(lags: tuple[int, int], seed: int = 0) -> QuantPlan:
    """conv 2->4 3x3 + LIF; pw 4->4 + on-chip SE + LIF; pw 4->4 + on-chip SE + LIF; dense
    readout. 6x6 maps, T = 8, one gate per lag in ``lags``."""
    rng = np.random.default_rng(seed)
    shape = (C, HW, HW)
    stages, qstages = [], []
    w = rng.integers(-40, 41, size=(C, 2, 3, 3))
    b = rng.integers(-200, 200, size=C)
    syn = Synapse("conv", w / 600.0, b / 600.0, (2, HW, HW), shape, (1, 1), (1, 1))
    st = Stage("s0", syn, None, Neuron("s0", shape, 0.5, 1.0))
    stages.append(st)
    qstages.append(QStage(st, w, b, 600.0, vth=600, dv=2048))
    for k, lag in enumerate(lags, start=1):
        S = 40.0 + 10 * k
        w = rng.integers(-30, 90, size=(C, C, 1, 1))
        b = rng.integers(0, 30, size=C)
        w1, b1, w2, b2 = _se(rng)
        gate = GateSpec(f"s{k}.se", k - 1, w1, b1, w2, b2)
        syn = Synapse("conv", w / S, b / S, shape, shape)
        st = Stage(f"s{k}", syn, gate, Neuron(f"s{k}", shape, 0.5, 1.0))
        og = gate_from_float(
            choose_scales(st.name, S, HW * HW, w1, w2, lag), *_se_of(gate), check=False
        )
        stages.append(st)
        qstages.append(QStage(st, w, b, S, vth=int(S), dv=2048, onchip=og))
    w = 2 * rng.integers(-40, 41, size=(3, C * HW * HW))
    b = rng.integers(-50, 50, size=3)
    st = Stage("fc", Synapse("dense", w / 100.0, b / 100.0, shape, (3,)), None, None)
    stages.append(st)
    qstages.append(QStage(st, w, b, 100.0))
    return QuantPlan(Plan((2, HW, HW), stages, T, 1.0), 8.0, tuple(qstages))


def _se_of(g: GateSpec) -> tuple[np.ndarray, ...]:
    return g.w1, g.b1, g.w2, g.b2


def _inputs() -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randn(2, 2, HW, HW) * 2


def _gated_currents(qp: QuantPlan, x: torch.Tensor, k: int) -> torch.Tensor:
    """The integer current (bias included) that gated stage ``k`` receives in the emulator."""
    em = emulate(qp, x)
    q = qp.stages[k]
    prev = em.trace.spikes[qp.stages[k - 1].name]
    a = run_stage(q, prev, False, T).round().to(torch.int64)
    return a + torch.from_numpy(q.bias).view(1, 1, -1, 1, 1)


@pytest.mark.parametrize("lag", [0, 1, 2])
def test_torch_module_equals_integer_reference(lag):
    qp = tiny_onchip((lag, lag))
    x = _gated_currents(qp, round_input(_inputs(), qp.input_scale)[0] / qp.input_scale, 1)
    og = qp.stages[1].onchip
    y_int, over = onchip_gate_int(og, x)
    assert over["se_gate"] == 0
    se = nn.Module()
    se.fc1, se.fc2 = nn.Linear(C, HID), nn.Linear(HID, C)
    g = qp.stages[1].gate
    with torch.no_grad():
        for lin, w, b in ((se.fc1, g.w1, g.b1), (se.fc2, g.w2, g.b2)):
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
    mod = OnchipSE(se, og.scales, T).double()
    cur = (x.double() / og.scales.scale).reshape(-1, C, HW, HW).requires_grad_(True)
    y = mod(cur)
    assert torch.equal((y.detach() * og.scales.scale).round().long().reshape(x.shape), y_int)
    assert torch.equal(torch.from_numpy(mod.integer_gate().w1), torch.from_numpy(og.w1))
    y.sum().backward()  # straight-through: gradients reach the current and the gate's weights
    assert cur.grad.abs().sum() > 0 and mod.fc1.weight.grad.abs().sum() > 0
    # the gate is input-dependent: neither the ungated current nor the rest gate's product
    g0 = torch.from_numpy(og.rest_gate()).view(1, 1, -1, 1, 1)
    assert not torch.equal(y_int, x) and not torch.equal(y_int, (x * g0) >> 7)


def test_lag_schedule_and_rest_gate():
    qp = tiny_onchip((1, 2))
    og = qp.stages[1].onchip
    x = torch.zeros(T, 1, C, HW, HW, dtype=torch.int64)
    x[3:] = 500
    y, _ = onchip_gate_int(og, x)
    assert torch.equal(y[:3], torch.zeros_like(y[:3]))  # zero current: zero product
    g0 = torch.from_numpy(og.rest_gate()).view(1, -1, 1, 1)
    assert torch.equal(y[3], (500 * g0).expand_as(y[3]) >> 7)  # gated by step 2's zero current
    full = onchip_gate_int(
        gate_from_float(_lag(og.scales, 0), *_se_of(qp.stages[1].gate), check=False), x
    )[0]
    assert torch.equal(y[4:], full[3:-1])  # lag 1: step t gated by step t-1's current
    with pytest.raises(NallnError, match="lag 5"):
        choose_scales("s", 10.0, 4, np.ones((HID, 4)), np.ones((4, HID)), lag=5)


def _lag(s: OnchipScales, lag: int) -> OnchipScales:
    from dataclasses import replace

    return replace(s, lag=lag)


def test_scales_round_trip_and_baked_values_are_on_grid():
    qp = tiny_onchip((1, 1))
    g = qp.stages[1].gate
    s = qp.stages[1].onchip.scales
    assert OnchipScales.from_dict(s.to_dict()) == s
    se = nn.Module()
    se.fc1, se.fc2 = nn.Linear(C, HID), nn.Linear(HID, C)
    with torch.no_grad():
        for lin, w, b in ((se.fc1, g.w1, g.b1), (se.fc2, g.w2, g.b2)):
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
    state = OnchipSE(se, s, T).on_grid_state()
    baked = gate_from_float(
        s, *(state[k].numpy() for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"))
    )
    ref = qp.stages[1].onchip
    for a, b in ((baked.w1, ref.w1), (baked.b1, ref.b1), (baked.w2, ref.w2), (baked.b2, ref.b2)):
        assert np.array_equal(a, b)
    with pytest.raises(NallnError, match="not on the on-chip SE grid"):
        gate_from_float(s, g.w1 + 0.3 / s.a1, g.b1, g.w2, g.b2)


@pytest.mark.lava
def test_lava_process_graph_equals_emulator_spike_for_spike():
    """Two gated layers (lags 1 and 0: main-path delays 3 and 4 steps, so every later layer's
    window moves), two inputs streamed back to back, every spike and the readout equal."""
    from nalln.conversion.lava_backend import run_lava

    qp = tiny_onchip((1, 0))
    x = _inputs()
    em = emulate(qp, x)
    assert not em.overflowed
    lava = run_lava(qp, x)
    for name, spikes in em.trace.spikes.items():
        assert 0.02 < spikes.float().mean() < 0.9, name  # the layers do spike
        assert torch.equal(lava.trace.spikes[name], spikes), name
    assert torch.equal(lava.trace.outputs, em.trace.outputs)
    assert lava.steps == 2 * T + 4 + 3 + 4 + 1 - 1  # N T + depth + delays + 1 - 1


@pytest.fixture(scope="module")
def tuned_onchip(tiny_run, tmp_path_factory):
    from nalln.deploy.finetune_fixed_point import FinetuneConfig, finetune_fixed_point

    out = tmp_path_factory.mktemp("onchip") / "fp"
    cfg = FinetuneConfig(se="onchip", epochs=1, calibration=8, train_images=8, batch_size=4)
    return finetune_fixed_point(tiny_run, out, config=cfg, progress=False, echo=lambda _m: None)


def test_finetuned_onchip_run_loads_with_the_chips_gate(tuned_onchip):
    """End to end on a tiny set: the fine-tuned run's float model (reference and fast path)
    computes the integer gate and agrees with its fixed-point image on every test image."""
    from nalln.loihi.grid import recorded_grid
    from nalln.models.blocks import se_blocks
    from nalln.models.fast import fast_model
    from nalln.runs import load_model

    loaded = load_model(tuned_onchip.run.path)
    grid = recorded_grid(loaded.run_meta)
    assert grid.se_mode == "onchip" and len(grid.onchip) == len(se_blocks(loaded.model)) > 0
    assert all(isinstance(b.se, OnchipSE) for b in se_blocks(loaded.model).values())
    r = tuned_onchip.report
    assert r["test"]["top1_agreement"]["fixed_point_vs_finetuned_float"] == 1.0
    assert "onchip" in r["se"]
    x = _images32()
    with torch.no_grad():
        assert torch.allclose(fast_model(loaded.model)(x), loaded.model(x), atol=1e-5)


def _images32() -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    return torch.randn(4, 3, 32, 32, generator=g)


@pytest.mark.lava
def test_simulate_onchip_run_on_lava_fixed_point(run_cli, tuned_onchip, tmp_path, capsys):
    import json

    run = str(tuned_onchip.run.path)
    args = ["simulate", run, "--se", "onchip", "--json", "-q"]
    code = run_cli(
        [*args, "--backend", "lava", "--fixed-point", "--n", "3", "--out", str(tmp_path / "l")]
    )
    assert code == 0
    m = json.loads(capsys.readouterr().out)
    assert m["se_mode"] == "onchip" and m["fixed_point"]["lava_matches_emulator_bit_exactly"]
    assert m["top1_agreement"] == 1.0 and m["spike_agreement"]["overall"] == 1.0
    code = run_cli([*args, "--backend", "loihi-emulator", "--out", str(tmp_path / "e")])
    assert code == 0
    m = json.loads(capsys.readouterr().out)
    assert m["top1_agreement"] == 1.0 and m["spike_agreement"]["overall"] == 1.0
    # refused in one line: onchip without fixed point, a static simulation of an onchip run,
    # converting it (no file form yet)
    out = tmp_path / "bad"
    for bad, msg in (
        (["simulate", run, "--se", "onchip", "--backend", "lava"], "Loihi's integer gate"),
        (["simulate", run, "--backend", "loihi-emulator", "--se", "static"], "on-chip SE"),
        (["convert", run, "--to", "lava", "--fixed-point"], "convert cannot write yet"),
    ):
        code = run_cli([*bad, "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and msg in err[0] and not out.exists(), bad


def test_block_cost_is_counted():
    og = tiny_onchip((1, 1)).stages[1].onchip
    c = og.cost(in_channels=C)
    assert c["neurons"] == C + C + HID + C + C * HW * HW
    assert c["synapses_fc1"] == c["synapses_fc2"] == C * HID
    assert c["synapses_broadcast"] == C * HW * HW and c["main_path_delay_steps"] == 3
