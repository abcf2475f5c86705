"""Loihi fixed point on a producer's graph against the producer's own spikes, on the inputs it is
calibrated on and on held-out ones (issue 13: >= 0.97 spike agreement).

``snntorch_conv_lif`` (snnTorch 1.0.0) is calibrated on its fixture's 4 inputs; the held-out
figure runs the same calibration on ``snntorch_conv_lif_heldout.npz`` (64 more inputs and
snnTorch's spikes of both layers, ``make_fixtures.py --heldout``). The recipe and the diagnosis
are in docs/conversion.md ("Where snntorch_conv_lif lost its fixed-point agreement").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nalln.conversion.nir_io import read_artefact
from nalln.conversion.plan import lower
from nalln.conversion.simulate import simulate
from nalln.ir.reference import run_plan
from nalln.loihi.arithmetic import A_MAX
from nalln.loihi.calibration import GRAPH_RANGE, RUN_RANGE, calibrate
from nalln.loihi.emulator import emulate
from nalln.loihi.grid import fixed_point_plan

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "producers"
NAME = "snntorch_conv_lif"


def _npz(name: str) -> dict[str, np.ndarray]:
    with np.load(HERE / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


def _plan():
    return lower(read_artefact(HERE / f"{NAME}.nir"), int(_npz(NAME)["steps"]))


def _per_input(s: torch.Tensor) -> np.ndarray:
    """[T, N, ...] spikes -> [N, T, K], the fixtures' layout."""
    return s.transpose(0, 1).reshape(s.shape[1], s.shape[0], -1).numpy()


def test_agreement_on_its_own_inputs_meets_the_bar(tmp_path):
    """Measured 0.9927 overall (layer 1 0.9938, output 0.9375: 10 of 160 output entries differ
    from snnTorch's); 0.954 before the membrane got its headroom."""
    fx = _npz(NAME)
    res = simulate(
        HERE / f"{NAME}.nir",
        backend="loihi-emulator",
        inputs=HERE / f"{NAME}.npz",
        steps=int(fx["steps"]),
        out=tmp_path / "s",
        progress=False,
    )
    assert res.metrics["spike_agreement"]["overall"] >= 0.97
    with np.load(tmp_path / "s" / "outputs.npz") as out:
        assert (out["reference"] == fx["spikes"]).all()
        assert (out["backend"] == fx["spikes"]).mean() >= 0.9


def test_held_out_agreement_against_snntorch():
    """Calibrated on the fixture's 4 inputs (as ``simulate`` does for a graph), run on 64
    others: measured 0.9894 overall against snnTorch's own spikes (layer 1 0.9901, output
    0.9543), no overflow; the recipe before measured 0.9477 (output 0.8969)."""
    plan, fx, ho = _plan(), _npz(NAME), _npz(f"{NAME}_heldout")
    qp = fixed_point_plan(plan, torch.from_numpy(fx["x"]), None, False)
    assert qp.report["stem_range"] == {
        "current_headroom": 2.0,
        "membrane_headroom": 2.0,
        "membrane": "simulated",
    }
    em = emulate(qp, torch.from_numpy(ho["x"]))
    assert not em.overflowed
    hidden = _per_input(em.trace.spikes[plan.stages[0].name]) == ho["hidden"]
    out = _per_input(em.trace.spikes[plan.stages[-1].name]) == ho["spikes"]
    overall = (hidden.sum() + out.sum()) / (hidden.size + out.size)
    assert overall >= 0.98 and hidden.mean() >= 0.985 and out.mean() >= 0.94


def test_the_held_out_file_is_snntorch_on_this_graph():
    """nalln's float reference equals snnTorch on every held-out entry of both layers, so the
    held-out figure compares with snnTorch itself."""
    plan, ho = _plan(), _npz(f"{NAME}_heldout")
    ref = run_plan(plan, torch.from_numpy(ho["x"])).spikes
    assert ho["x"].shape == (64, 1, 8, 8) and ho["spikes"].sum() > 0
    assert (_per_input(ref[plan.stages[0].name]) == ho["hidden"]).all()
    assert (_per_input(ref[plan.stages[-1].name]) == ho["spikes"]).all()


def test_run_range_is_the_old_bound_and_leaves_this_stem_no_room():
    """RUN_RANGE (nalln's own runs) is the bound the measured NeurALLNet figures were made with,
    ``A_MAX / (max(2, build_up) max|W x|)``; on this graph (beta 0.8, 8 steps: build-up 4.2)
    it puts the membrane at its 24-bit limit, every unclipped stem overflows by the bias, and
    the calibration can keep only clipped weights. GRAPH_RANGE leaves the membrane its
    headroom: nothing clipped, nothing overflows."""
    plan, x = _plan(), torch.from_numpy(_npz(NAME)["x"])
    st = plan.stages[0]
    peak = float(F.conv2d(x.double(), torch.from_numpy(st.synapse.weight), padding=1).abs().max())
    build_up = sum((1 - st.neuron.decay) ** t for t in range(plan.num_steps))
    old = calibrate(plan, x, stem_range=RUN_RANGE).stages[0]
    assert old.scale == A_MAX / (max(2.0, build_up) * peak)
    assert old.calibration["weights_clipped"] > 0.1
    new = calibrate(plan, x, stem_range=GRAPH_RANGE).stages[0]
    assert new.calibration["weights_clipped"] == 0 and new.scale < old.scale / 2
