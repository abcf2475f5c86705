"""Fixed point: calibration stays in range; overflow is reported per layer, never clipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nalln.conversion.export import export_model
from nalln.conversion.nir_io import read_artefact, write_artefact
from nalln.conversion.plan import lower
from nalln.errors import NallnError
from nalln.loihi.arithmetic import A_MAX, BIAS_MAX, VTH_MAX, quantise_weight
from nalln.loihi.calibration import calibrate
from nalln.loihi.emulator import check_overflow, emulate
from nalln.runs import load_model


@pytest.fixture(scope="module")
def qplan(tiny_run, tmp_path_factory):
    loaded = load_model(tiny_run)
    d = tmp_path_factory.mktemp("fx")
    write_artefact(d, export_model(loaded.model, se_mode="hybrid"))
    torch.manual_seed(8)
    x = torch.randn(16, 3, 32, 32)
    return calibrate(lower(read_artefact(d)), x), x


def test_quantised_weights_are_loihi_weights():
    w = np.array([-1.0, -0.5, 0.01, 0.5, 1.0])
    conv, _ = quantise_weight(w, 127, "conv")
    dense, clipped = quantise_weight(w, 254 * 1.5, "dense")
    assert conv.tolist() == [-127, -64, 1, 64, 127]
    assert np.all(dense % 2 == 0) and np.abs(dense).max() == 254 and clipped == 0.4


def test_calibration_stays_in_range(qplan):
    qp, x = qplan
    for q in qp.stages:
        assert np.abs(q.bias).max(initial=0) <= BIAS_MAX
        assert 0 <= q.vth <= VTH_MAX
    assert emulate(qp, x).overflowed == {}
    rows = qp.report["layers"]
    assert [r["layer"] for r in rows] == [q.name for q in qp.stages]
    assert all(0.9 < r["spike_agreement_own"] <= 1 for r in rows if "spike_agreement_own" in r)


def test_overflow_is_reported_per_layer(qplan):
    qp, x = qplan
    em = emulate(qp, x * 1000)  # far brighter than anything calibrated
    assert "stem_lif" in em.overflowed
    assert em.overflow["stem_lif"]["synaptic_input"] > 0
    with pytest.raises(NallnError, match=r"fixed-point overflow .*stem_lif: \d+ synaptic_input"):
        check_overflow(em, "test images")
    assert A_MAX == 2**17 - 1


def test_current_decay_and_loop_arithmetic_is_lavas():
    """``du`` with Lava's ds_offset (+1), the truncating decay of negative currents, the
    24-bit current wrap, and the loop weights' exponent (mantissa << e)."""
    from nalln.loihi.arithmetic import (
        DU_NONE,
        current_du,
        decay_fixed,
        quantise_recurrent,
        wrap_current,
    )

    assert [current_du(d) for d in (1.0, 0.5, 0.25, 1e-6)] == [DU_NONE, 2047, 1023, 0]
    x = torch.tensor([-4097, -1, 0, 1, 4097, 12345], dtype=torch.int64)
    keep = 4096 - (1023 + 1)
    want = np.sign(x.numpy() * keep) * np.right_shift(np.abs(x.numpy() * keep), 12)
    assert decay_fixed(x, keep).tolist() == want.tolist()
    lim = 2**23
    u = torch.tensor([lim + 5, lim, -lim, -lim - 5], dtype=torch.int64)
    assert wrap_current(u).tolist() == [5 - lim, lim, lim, lim - 5]  # as Lava's np.where pair
    w = np.array([[0.5, -1.0], [0.25, 0.0]])
    q, e, clipped = quantise_recurrent(w, 1000.0, exponent=True)
    assert e == 2 and clipped == 0 and np.all(q % 8 == 0) and q[0, 1] == -1000
    q0, e0, clipped0 = quantise_recurrent(w, 1000.0, exponent=False)
    assert e0 == 0 and np.abs(q0).max() == 254 and clipped0 == 0.5
