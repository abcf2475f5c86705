"""The emulator's float fast paths equal Lava's int64 arithmetic bit for bit, overflow included.

Lava itself is compared with the emulator in test_lava.py and others; here the fast paths
(float32/float64 LIF, the fused synapse + LIF stage) are held to the int64 reference loop on
inputs chosen to reach every branch: threshold ties, membrane overflow, synaptic overflow
(fallback), every decay kind, a held (stride 0) input.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from nalln.conversion.export import export_model
from nalln.conversion.nir_io import read_artefact, write_artefact
from nalln.conversion.plan import lower
from nalln.loihi.arithmetic import (
    A_MAX,
    lif_fixed,
    lif_integer,
    round_input,
    run_stage,
    spike_stage,
)
from nalln.loihi.calibration import calibrate
from nalln.loihi.emulator import emulate
from nalln.runs import load_model


@pytest.fixture(scope="module")
def qplan(tiny_run, tmp_path_factory):
    """The tiny run with hybrid SE: gated layers (general path) and ungated ones (fused)."""
    loaded = load_model(tiny_run)
    d = tmp_path_factory.mktemp("fast")
    write_artefact(d, export_model(loaded.model, se_mode="hybrid"))
    torch.manual_seed(3)
    x = torch.randn(12, 3, 32, 32)
    return calibrate(lower(read_artefact(d)), x), x


def _same(got, want):
    (s, o), (s_ref, o_ref) = got, want
    assert s.dtype == torch.bool and torch.equal(s, s_ref)
    assert o == o_ref


@pytest.mark.parametrize("dv", [2048, 1024, 0, 4096, 1000, 3001])
def test_float_lif_equals_int64_loop(qplan, dv):
    """Random integer currents around the threshold and far beyond the membrane's 24 bits:
    same spikes, same overflow counts (power-of-two keep: float32; others: float64)."""
    qp, _ = qplan
    q = next(q for q in qp.stages if q.neuron is not None and q.gate is None)
    q = replace(q, dv=dv)
    g = torch.Generator().manual_seed(dv)
    shape = (4, 3, *q.out_shape)
    for hi in (q.vth // 2, 4 * q.vth, A_MAX):  # spikes, many spikes, membrane overflow
        a = torch.randint(-hi, hi + 1, shape, generator=g).float()
        bias = np.random.default_rng(dv).integers(-4095, 4096, q.out_shape[0])
        got = lif_fixed(a, q, bias, q.vth)
        _same(got, lif_integer(a, q, bias, q.vth))
        assert (hi < 4 * q.vth or got[0].any()) and (hi < A_MAX or got[1]["membrane"] > 0)
        held = a[0].unsqueeze(0).expand_as(a)  # stride 0 over steps: read once
        _same(lif_fixed(held, q, None, q.vth), lif_integer(held, q, None, q.vth))
    a = torch.full(shape, float(A_MAX + 1))  # synaptic overflow: the int64 loop, wrap and all
    got = lif_fixed(a, q, None, q.vth)
    assert got[1]["synaptic_input"] > 0
    _same(got, lif_integer(a, q, None, q.vth))


def test_fused_stage_equals_general_path(qplan):
    """Every layer's fused synapse + LIF equals run_stage + the int64 loop on the same input,
    for ordinary images and ones bright enough to overflow (then it declines or counts)."""
    qp, x = qplan
    T = qp.plan.num_steps
    for bright in (1.0, 30.0):
        fused_layers = 0
        for k, q, inp in _layer_inputs(qp, x * bright):
            got = spike_stage(q, inp, T, k == 0)
            if got is not None:
                fused_layers += 1
                bias = None if q.gate is not None else q.bias
                want = lif_integer(run_stage(q, inp, k == 0, T), q, bias, q.vth)
                assert torch.equal(got[0].bool(), want[0]) and got[1] == want[1]
        assert fused_layers > 0


def _layer_inputs(qp, x):
    """Each spiking layer with its index and what it receives in the emulation of ``x``."""
    em = emulate(qp, x)
    inp = round_input(x, qp.input_scale)[0]
    for k, q in enumerate(qp.stages):
        if q.neuron is None:
            return
        yield k, q, inp
        inp = em.trace.spikes[q.name]


def test_emulate_is_deterministic_across_batches(qplan):
    """Chunking and batching change nothing: all at once equals one image at a time."""
    from nalln.loihi.emulator import emulate_batched

    qp, x = qplan
    whole = emulate(qp, x)
    one = emulate_batched(qp, x, batch_size=1)
    assert torch.equal(whole.trace.outputs, one.trace.outputs)
    assert all(torch.equal(whole.trace.spikes[k], one.trace.spikes[k]) for k in whole.trace.spikes)
    assert whole.overflow == one.overflow


@pytest.mark.parametrize("batch_size", [5, 64])
def test_batches_and_kept_trace_equal_one_pass(qplan, batch_size):
    """Uneven batches (the trace written chunk by chunk into slices of the split's trace) and
    one batch larger than the CPU cap equal the unbatched emulation, dtype and all."""
    from nalln.loihi.emulator import CPU_BATCH, cpu_batch, emulate_batched

    qp, x = qplan
    whole = emulate(qp, x)
    got = emulate_batched(qp, x, batch_size=batch_size)
    assert torch.equal(whole.trace.outputs, got.trace.outputs)
    for k, v in whole.trace.spikes.items():
        assert got.trace.spikes[k].dtype == v.dtype and torch.equal(got.trace.spikes[k], v)
    assert whole.overflow == got.overflow
    assert cpu_batch(64, "cpu") == CPU_BATCH and cpu_batch(64, "cuda") == 64


def test_spike_stage_keep_and_pool(qplan):
    """The bool copy written while in cache equals the returned spikes; pooled weights and
    buffers (a second batch) give the same spikes as a fresh call."""
    from nalln.loihi.arithmetic import kept

    qp, x = qplan
    T = qp.plan.num_steps
    em = emulate(qp, x)
    pool: dict = {}
    checked = 0
    for k, q, inp in _layer_inputs(qp, x):
        fresh = spike_stage(q, inp, T, k == 0)
        if fresh is not None:
            keep = torch.zeros((T, len(x), *fresh[0].shape[2:]), dtype=torch.bool)
            for _ in range(2):  # the second call reads the pool
                s, o = spike_stage(q, inp, T, k == 0, pool, keep)
                assert kept(keep, s) and torch.equal(keep, s.bool())
                assert torch.equal(s, fresh[0]) and o == fresh[1]
            assert torch.equal(keep, em.trace.spikes[q.name].reshape(keep.shape))
            checked += 1
    assert checked > 0 and any(key[0] == "weights" for key in pool)


def test_round_input_counts_out_of_range():
    """The one-pass range proof and the counting path agree with the plain formula."""
    x = torch.tensor([[0.5, -0.25, 3.0e7, -3.0e7, 1.0]], dtype=torch.float32)
    for scale in (1.0, 4.0):
        got, over = round_input(x, scale)
        want = torch.round(x.double() * scale)
        assert over == int((want.abs() > 2**23 - 1).sum()) == 2
        assert torch.equal(got, want.clamp(-(2**23 - 1), 2**23 - 1))
    small, over = round_input(x[:, :2], 2.0)
    assert over == 0 and torch.equal(small, torch.round(x[:, :2].double() * 2.0))
    assert small.data_ptr() != x.data_ptr()


def test_layer_agreement_counts_exactly():
    """simulate's per-layer agreement (nonzero counts of bool traces, sums of graded counts)
    equals the plain formulas entry for entry."""
    from nalln.conversion.simulate import layer_agreement
    from nalln.ir.reference import Trace

    g = torch.Generator().manual_seed(0)
    ref = {
        "b": torch.rand(4, 3, 8, 5, 5, generator=g) > 0.7,
        "c": (torch.rand(4, 3, 6, generator=g) * 3).floor(),
    }
    got = {k: v.clone() for k, v in ref.items()}
    got["b"][0, 0, 0, 0, :3] ^= True
    got["c"][1, 2, 3] += 2
    out = layer_agreement(
        Trace(torch.zeros(4, 3, 2), ref), Trace(torch.zeros(4, 3, 2), got), ["b", "c"]
    )
    for k, a in ref.items():
        b, d = got[k], out["per_layer_details"][k]
        same = int((a == b).sum())
        assert out["per_layer"][k] == same / a.numel() and d["mismatches"] == a.numel() - same
        assert (d["spikes_reference"], d["spikes_backend"]) == (int(a.sum()), int(b.sum()))
        assert d["spike_rate_reference"] == float(a.double().mean())
    assert out["per_layer_details"]["b"]["mismatches"] == 3
