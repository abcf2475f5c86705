"""Fixed-point fine-tuning: the fake-quantised forward is Loihi's integer arithmetic, the baked
checkpoint loads everywhere and deploys on its recorded grid, bad input fails in one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nalln.checkpoint import load_checkpoint, save_checkpoint
from nalln.conversion.export import export_model
from nalln.conversion.fold import mean_gates
from nalln.conversion.nir_io import read_artefact, write_artefact
from nalln.conversion.reference import run_torch_model
from nalln.data.transforms import Preprocess
from nalln.deploy.finetune_fixed_point import (
    FinetuneConfig,
    deployed_plan,
    finetune_fixed_point,
    grid_for,
)
from nalln.errors import NallnError
from nalln.ir.reference import apply_gate
from nalln.loihi.emulator import emulate
from nalln.loihi.fake_quant import FakeQuantNet, static_se_as_plain
from nalln.loihi.grid import (
    META_KEY,
    FixedPointGrid,
    attach_gate_rounding,
    check_exact_dynamics,
    threshold_offset,
)
from nalln.models.blocks import SpikingDSBlock
from nalln.models.fast import fast_model
from nalln.runs import load_model


def _images(n: int = 6, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g) * 1.2


@pytest.fixture(scope="module", params=["static", "hybrid", "onchip"])
def quantised(request, tiny_run):
    """(start model, grid, fake-quant net) of the tiny run for one SE mode."""
    model = load_model(tiny_run).model
    x = _images(12, seed=5)
    if request.param == "static":
        model, mode = static_se_as_plain(model, mean_gates(model, x)), "none"
    else:
        mode = request.param
    grid, _ = grid_for(model, mode, x, progress=False)
    return model, grid, FakeQuantNet(model, grid)


def test_fake_quant_forward_equals_emulator(quantised):
    model, grid, net = quantised
    net = net.double()  # float64: every current is exact, so the comparison is exact
    x = _images()
    spikes: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        logits = net.forward_steps(x.double(), spikes).mean(0)
    baked = net.float().bake(model)
    em = emulate(deployed_plan(baked, grid), x)
    assert set(spikes) == set(em.trace.spikes)
    for name, s in spikes.items():
        assert torch.equal(s, em.trace.spikes[name]), name
    assert sum(int(s.sum()) for s in spikes.values()) > 0  # not a silent network
    assert torch.allclose(logits.float(), em.trace.logits, atol=1e-5)


def test_static_baked_float_model_spikes_as_fixed_point(quantised):
    """The deployed float32 torch model (input rounded by its preprocessing) spikes as Loihi."""
    model, grid, net = quantised
    baked = net.bake(model)
    x = _images(8, seed=11)
    xq = torch.round(x * grid.input_scale) / grid.input_scale
    ref = run_torch_model(baked, xq)
    em = emulate(deployed_plan(baked, grid), xq)
    # hybrid: the side-car rounds the gated current; the torch SE does too once it has the
    # grid's current scales (load_model attaches them from a fine-tuned checkpoint's metadata)
    attach_gate_rounding(baked, grid)
    ref = run_torch_model(baked, xq)
    assert set(em.trace.spikes) == set(ref.spikes)
    for name in em.trace.spikes:
        assert torch.equal(em.trace.spikes[name], ref.spikes[name]), name
    assert torch.equal(ref.logits.argmax(1), em.trace.logits.argmax(1))


@pytest.mark.parametrize("quantised", ["hybrid"], indirect=True)
def test_gate_rounding_reaches_every_path(quantised, tmp_path):
    """With current scales attached, the reference model, the fast path and the exported
    side-car (written and read back) all put the gated current on the chip's grid."""
    model, grid, net = quantised
    assert grid.se_mode == "hybrid"
    baked = net.bake(model)
    attach_gate_rounding(baked, grid)
    blocks = [m for m in baked.modules() if isinstance(m, SpikingDSBlock) and m.se is not None]
    assert blocks and all(b.se.current_scale is not None for b in blocks)
    cur = torch.randn(2, blocks[0].se.fc1.in_features, 4, 4)
    s = blocks[0].se.current_scale
    y = blocks[0].se(cur)
    assert torch.allclose(y * s, torch.round(y * s), atol=1e-3)
    x = _images(4, seed=8)
    with torch.no_grad():
        assert torch.equal(fast_model(baked)(x).argmax(1), baked(x).argmax(1))
        assert torch.allclose(fast_model(baked)(x), baked(x), atol=1e-5)
    write_artefact(tmp_path / "hy", export_model(baked, se_mode="hybrid"))
    gates = read_artefact(tmp_path / "hy").gates
    assert [g.current_scale for g in gates] == [b.se.current_scale for b in blocks]
    g = gates[0]
    out = apply_gate(g, cur.double())
    assert torch.allclose(out * g.current_scale, torch.round(out * g.current_scale), atol=1e-9)


def test_grid_thresholds_sit_between_reachable_membranes(quantised):
    _, grid, _ = quantised
    off = threshold_offset(grid.num_steps)
    for g in grid.layers:
        if g.readout:
            continue
        assert math.isclose(g.scale - g.vth, off) and g.vth >= 1
    assert FixedPointGrid.from_dict(json.loads(json.dumps(grid.to_dict()))) == grid


def test_straight_through_gradients_and_bake_stays_on_grid(quantised):
    model, grid, net = quantised
    net = net.float().train()
    x = _images(4, seed=2)
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    grads = [p.grad for p in net.weights.values()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    before = {k: v.detach().clone() for k, v in net.weights.items()}
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad.sign()
    net.zero_grad()
    assert any(not torch.equal(before[k], v) for k, v in net.weights.items())
    deployed_plan(net.eval().bake(model), grid)  # raises if any weight or bias left the grid


def test_preprocess_input_scale_round_trip():
    pre = Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), input_scale=10.0)
    meta = pre.to_meta()
    assert meta["input_scale"] == 10.0
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    y = Preprocess.from_meta(meta)(x)
    assert torch.allclose(y * 10, torch.round(y * 10), atol=1e-4)
    plain = {k: v for k, v in meta.items() if k != "input_scale"}
    assert Preprocess.from_meta(plain).input_scale is None  # older checkpoints load unchanged


@pytest.fixture(scope="module")
def tuned(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("qat") / "fp"
    cfg = FinetuneConfig(se="static", epochs=1, calibration=8, train_images=8, batch_size=4)
    return finetune_fixed_point(tiny_run, out, config=cfg, progress=False, echo=lambda _m: None)


def test_finetuned_run_is_an_ordinary_run(tuned, tiny_run):
    res = tuned
    for f in (
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
        "config.json",
        "splits.csv",
        "metrics.csv",
        "finetune_report.json",
        "finetune_report.md",
        "finetune_accuracy.png",
    ):
        assert (res.run.path / f).is_file(), f
    loaded = load_model(res.run.path)
    assert loaded.synthetic and loaded.model.config.use_se is False
    assert loaded.preprocess.input_scale == pytest.approx(loaded.meta[META_KEY]["input_scale"])
    assert loaded.meta["fixed_point_finetune"]["config"]["epochs"] == 1
    r = res.report
    assert [h["epoch"] for h in r["history"]] == [0, 1]
    assert r["test"]["top1_agreement"]["fixed_point_vs_finetuned_float"] == 1.0
    assert set(r["test"]["accuracy"]) == {
        "original_model",
        "quantisation_start_model",
        "finetuned_float_model",
        "finetuned_fixed_point",
    }
    assert (res.run.path / "splits.csv").read_text() == (tiny_run / "splits.csv").read_text()


@pytest.mark.lava
def test_simulate_and_convert_use_the_recorded_grid(run_cli, tuned, tmp_path, capsys):
    run = str(tuned.run.path)
    code = run_cli(
        [
            "simulate",
            run,
            "--backend",
            "lava",
            "--fixed-point",
            "--n",
            "4",
            "--json",
            "-q",
            "--out",
            str(tmp_path / "sim"),
        ]
    )
    assert code == 0
    m = json.loads(capsys.readouterr().out)
    assert m["top1_agreement"] == 1.0 and m["spike_agreement"]["overall"] == 1.0
    assert m["fixed_point"]["lava_matches_emulator_bit_exactly"] is True
    assert "recorded" in m["fixed_point"]["grid"]
    out = tmp_path / "conv"
    assert run_cli(["convert", run, "--to", "lava", "--fixed-point", "--out", str(out), "-q"]) == 0
    spec = json.loads((out / "fixed_point.json").read_text())
    grid = tuned.report["grid"]
    assert spec["input_scale"] == pytest.approx(grid["input_scale"])
    assert [ly["vth"] for ly in spec["layers"]] == [ly["vth"] for ly in grid["layers"]]
    assert (out / "network.net").is_file()


def test_cli_finetune_and_bad_input(run_cli, tiny_run, tuned, tmp_path, capsys):
    out = tmp_path / "fp0"
    assert (
        run_cli(
            [
                "finetune-fixed-point",
                str(tiny_run),
                "--out",
                str(out),
                "--epochs",
                "0",
                "--calibration",
                "8",
                "-q",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "SYNTHETIC" in text and "fixed point vs finetuned float" in text
    bad = [
        (["--out", str(tuned.run.path)], "already exists"),
        (["--out", str(tmp_path / "x"), "--epochs", "-1"], "--epochs"),
        (["--out", str(tmp_path / "x"), "--lr", "0"], "--lr"),
        (["--out", str(tmp_path / "x"), "--data", str(tmp_path / "nowhere")], "nowhere"),
    ]
    for args, msg in bad:
        assert run_cli(["finetune-fixed-point", str(tiny_run), *args, "-q"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("nalln: error:") and msg in err and err.count("\n") == 1
    lone = tmp_path / "lone.safetensors"  # a checkpoint outside its run folder: no splits
    lone.write_bytes((tiny_run / "checkpoints" / "best.safetensors").read_bytes())
    assert run_cli(["finetune-fixed-point", str(lone), "--out", str(tmp_path / "y"), "-q"]) == 2
    assert "run folder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_off_grid_checkpoint_is_refused(tuned, tmp_path):
    ckpt = load_checkpoint(tuned.run.path / "checkpoints" / "best.safetensors")
    state = dict(ckpt.state_dict)
    state["stages.0.pw.conv.weight"] = state["stages.0.pw.conv.weight"] * 1.01
    save_checkpoint(tmp_path / "bad.safetensors", state, ckpt.meta)
    grid = FixedPointGrid.from_dict(ckpt.meta[META_KEY])
    model = load_model(tmp_path / "bad.safetensors").model
    with pytest.raises(NallnError, match="not on the fixed-point grid"):
        deployed_plan(model, grid)


def test_malformed_grid_and_inexact_dynamics_are_refused():
    with pytest.raises(NallnError, match="format"):
        FixedPointGrid.from_dict({"format": "other"})
    bad = {"format": "nalln-fixed-point-grid/1", "num_steps": 4, "input_scale": 1.0}
    with pytest.raises(NallnError, match="malformed"):
        FixedPointGrid.from_dict({**bad, "se_mode": "none", "layers": [{"name": "a"}]})
    with pytest.raises(NallnError, match="tau = 2"):
        check_exact_dynamics(4, 1 / 3)
    with pytest.raises(NallnError, match="T <= 7"):
        check_exact_dynamics(8, 0.5)
    assert np.isclose(threshold_offset(4), 1 / 16)


def test_loihi_emulator_backend_runs_the_whole_split_exactly(run_cli, tuned, tmp_path, capsys):
    """``--backend loihi-emulator``: the recorded grid, every test image, spike for spike the
    fine-tuned torch model (the exact grid), with a bootstrapped accuracy interval."""
    from nalln.run_data import run_index, split_records
    from nalln.runs import load_model

    loaded = load_model(tuned.run.path)
    n_test = len(split_records(loaded, run_index(loaded, None), "test"))
    code = run_cli(
        [
            "simulate",
            str(tuned.run.path),
            "--backend",
            "loihi-emulator",
            "--json",
            "-q",
            "--out",
            str(tmp_path / "emu"),
        ]
    )
    assert code == 0
    m = json.loads(capsys.readouterr().out)
    assert m["backend"] == "loihi-emulator" and m["mode"] == "fixed point (Loihi)"
    assert m["images"] == n_test
    assert m["top1_agreement"] == 1.0 and m["spike_agreement"]["overall"] == 1.0
    assert "recorded" in m["fixed_point"]["grid"] and m["fixed_point"]["overflows"] == {}
    low, high = m["accuracy_ci95"]
    assert low <= m["accuracy"] <= high
    assert (tmp_path / "emu" / "report.json").is_file()


def test_fixed_point_refused_on_norse(run_cli, tuned, tmp_path, capsys):
    out = tmp_path / "norse-fp"
    code = run_cli(
        ["simulate", str(tuned.run.path), "--backend", "norse", "--fixed-point", "--out", str(out)]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--fixed-point applies to --backend lava or loihi-emulator" in err[0]
    assert not out.exists()


@pytest.mark.lava
def test_demo_step_shows_float_and_deployed_accuracy_side_by_side(tiny_run, synth_root, tmp_path):
    """``nalln demo``'s fixed-point step: the source run's and the deployed run's accuracy on the
    whole test split (the emulator), each with its bootstrap interval, and Lava's agreement."""
    from nalln.deploy.demo import run_fixed_point_demo_step
    from nalln.run_data import run_index, split_records
    from nalln.runs import load_model

    s = run_fixed_point_demo_step(tiny_run, synth_root, tmp_path / "fp", progress=False)
    loaded = load_model(tiny_run)
    n_test = len(split_records(loaded, run_index(loaded, synth_root), "test"))
    assert s["deployed_images"] == n_test
    for key in ("float_accuracy", "deployed_accuracy"):
        low, high = s[f"{key}_ci95"]
        assert low <= s[key] <= high
    assert s["float_accuracy"] == s["finetune"]["accuracy"]["original_model"]
    assert s["deployed_accuracy"] == s["finetune"]["accuracy"]["finetuned_fixed_point"]
    assert (
        s["lava_top1_agreement"] == 1.0
        and s["emulator"]["top1_agreement_vs_finetuned_float"] == 1.0
    )
    assert s["emulator"]["speedup_vs_lava"] > 0
