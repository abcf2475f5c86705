"""Lava back-end: real Lava process graphs on the CPU (float and Loihi fixed point), netx."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nalln.conversion import lava_compat
from nalln.conversion.export import export_model
from nalln.conversion.fold import mean_gates, static_se_model
from nalln.conversion.nir_io import Artefact, read_artefact, write_artefact
from nalln.conversion.plan import lower
from nalln.conversion.reference import run_torch_model
from nalln.ir.reference import run_plan
from nalln.loihi.calibration import calibrate
from nalln.loihi.emulator import emulate
from nalln.runs import load_model

pytestmark = pytest.mark.lava


@pytest.fixture(scope="module")
def lava():
    lava_compat.import_lava("lava.proc.conv.utils")
    from nalln.conversion import lava_backend

    return lava_backend


@pytest.fixture(scope="module")
def tiny_plans(tiny_run, tmp_path_factory):
    loaded = load_model(tiny_run)
    torch.manual_seed(4)
    calib = torch.randn(24, 3, 32, 32)
    plans = {}
    for mode in ("static", "hybrid"):
        gates = mean_gates(loaded.model, calib) if mode == "static" else None
        d = tmp_path_factory.mktemp(mode)
        write_artefact(d, export_model(loaded.model, se_mode=mode, gates=gates))
        ref = static_se_model(loaded.model, gates) if gates else loaded.model
        plans[mode] = (lower(read_artefact(d)), ref)
    return plans, calib


def test_vectorised_conv_equals_lavas_own(lava):
    from lava.proc.conv.utils import conv_scipy

    from nalln.conversion.lava_processes.processes import conv_whc

    rng = np.random.default_rng(0)
    for w_, h, c, co, k, s, p, g in [
        (9, 7, 6, 4, 3, 2, 1, 2),
        (8, 8, 130, 130, 3, 2, 1, 130),
        (5, 6, 4, 8, 1, 1, 0, 1),
    ]:
        x = rng.normal(size=(w_, h, c))
        w = rng.normal(size=(co, k, k, c // g))
        want = conv_scipy(x, w, (k, k), (s, s), (p, p), (1, 1), g)
        assert np.allclose(conv_whc(x, w, (s, s), (p, p), g), want, atol=1e-10)


@pytest.mark.parametrize("mode", ["hybrid", "static"])
def test_lava_float_matches_torch(lava, tiny_plans, mode):
    plans, _ = tiny_plans
    plan, ref_model = plans[mode]
    torch.manual_seed(5)
    x = torch.randn(3, 3, 32, 32)
    want = run_torch_model(ref_model, x)
    run = lava.run_lava(plan, x)
    for k in want.spikes:
        assert torch.equal(run.trace.spikes[k], want.spikes[k]), k
    assert torch.allclose(run.trace.logits, want.logits, atol=1e-4)
    assert run.processes > 3 * len(plan.neurons)


def test_lava_fixed_point_is_bit_exact_with_emulator(lava, tiny_plans):
    plans, calib = tiny_plans
    plan, _ = plans["hybrid"]  # covers the fixed-point SE process too
    qp = calibrate(plan, calib)
    assert qp.report["layers"] and all("scale" in r for r in qp.report["layers"])
    torch.manual_seed(6)
    x = torch.randn(2, 3, 32, 32)
    em = emulate(qp, x)
    assert em.overflowed == {}
    run = lava.run_lava(qp, x)
    for k in em.trace.spikes:
        assert torch.equal(run.trace.spikes[k], em.trace.spikes[k]), k
    assert torch.allclose(run.trace.outputs, em.trace.outputs)
    ints = [q.weight for q in qp.stages]
    assert all(np.abs(w).max() <= 254 for w in ints)
    assert all(np.abs(q.weight).max() <= 127 for q in qp.stages if q.kind == "conv")


def test_netx_file_loads_and_runs(lava, tiny_plans, tmp_path):
    from nalln.conversion.netx import describe_netx, run_netx, write_netx

    plans, calib = tiny_plans
    plan, _ = plans["static"]
    qp = calibrate(plan, calib)
    path = write_netx(qp, tmp_path / "net.net")
    table = describe_netx(path)
    assert table.count("Conv") == sum(1 for q in qp.stages if q.kind == "conv")
    logits = run_netx(path, qp, calib[:1])
    assert np.allclose(logits, emulate(qp, calib[:1]).trace.logits[0].double().numpy(), atol=1e-5)


def test_lava_runs_a_foreign_graph(lava, make_foreign):
    art = Artefact([make_foreign()], [], {"num_steps": 3})
    plan = lower(art)
    torch.manual_seed(7)
    x = torch.randn(3, 2, 8, 8) * 2
    want = run_plan(plan, x)
    got = lava.run_lava(plan, x).trace
    for k in want.spikes:
        assert torch.equal(got.spikes[k], want.spikes[k]), k
    assert torch.allclose(got.outputs.double(), want.outputs, atol=1e-8)


def _events(n: int, steps: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, steps, 2, 8, 8, generator=g) < 0.3).float()


def test_lava_runs_per_step_inputs_float_and_fixed(lava, make_foreign):
    """Event inputs (a value per step): Lava float equals the float reference, Lava fixed point
    equals the bit-exact emulator, spike for spike."""
    plan = lower(Artefact([make_foreign()], [], {}), 5)
    x = _events(3, 5, 8) * 2.0
    want = run_plan(plan, x)
    got = lava.run_lava(plan, x).trace
    for k in want.spikes:
        assert torch.equal(got.spikes[k], want.spikes[k]), k
        assert int(want.spikes[k].sum()) > 0, k
    assert torch.allclose(got.outputs.double(), want.outputs, atol=1e-8)
    qp = calibrate(plan, _events(16, 5, 9) * 2.0)
    em = emulate(qp, x)
    fixed = lava.run_lava(qp, x).trace
    for k in em.trace.spikes:
        assert torch.equal(fixed.spikes[k], em.trace.spikes[k]), k
    assert torch.allclose(fixed.outputs, em.trace.outputs)


def test_netx_check_compares_output_spikes_of_a_spiking_output(lava, make_foreign, tmp_path):
    """A graph ending in a spiking LIF: netx is checked on its output spikes (the old check
    read the last membrane as a readout and failed on a correct file)."""
    from nalln.conversion.netx import check_netx, write_netx

    plan = lower(Artefact([make_foreign(spiking_output=True)], [], {}), 6)
    torch.manual_seed(10)
    x = torch.randn(6, 2, 8, 8) * 2
    qp = calibrate(plan, x)
    summary = check_netx(write_netx(qp, tmp_path / "net.net"), qp, x)
    assert summary["compared"].startswith("output spikes")
    assert summary["spike_mismatches"] == 0 and summary["output_spikes_netx"] > 0
    assert summary["output_spikes_netx"] == summary["output_spikes_emulator"]
