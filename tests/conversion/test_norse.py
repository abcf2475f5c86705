"""Norse back-end: real Norse simulations against the torch model and the NIR reference."""

from __future__ import annotations

import pytest
import torch

from nalln.conversion.export import export_model
from nalln.conversion.fold import mean_gates, static_se_model
from nalln.conversion.nir_io import Artefact, read_artefact, write_artefact
from nalln.conversion.norse_backend import NorseNetwork
from nalln.conversion.plan import lower
from nalln.conversion.reference import run_torch_model
from nalln.ir.reference import run_plan
from nalln.runs import load_model

pytestmark = pytest.mark.norse


@pytest.mark.parametrize("mode", ["static", "hybrid"])
def test_norse_reproduces_torch_model(tiny_run, tmp_path, mode):
    loaded = load_model(tiny_run)
    torch.manual_seed(1)
    x = torch.randn(5, 3, 32, 32)
    gates = mean_gates(loaded.model, x) if mode == "static" else None
    write_artefact(tmp_path, export_model(loaded.model, se_mode=mode, gates=gates))
    art = read_artefact(tmp_path)
    ref_model = static_se_model(loaded.model, gates) if gates else loaded.model
    want = run_torch_model(ref_model, x)
    got = NorseNetwork(art).run(x, loaded.model.num_steps)
    assert set(got.spikes) == set(want.spikes)
    total = sum(v.numel() for v in want.spikes.values())
    same = sum(int((got.spikes[k] == want.spikes[k]).sum()) for k in want.spikes)
    assert same / total >= 0.999
    assert torch.equal(got.logits.argmax(1), want.logits.argmax(1))
    assert sum(int(v.sum()) for v in want.spikes.values()) > 0  # not a silent network


def test_norse_on_foreign_graph_fixes_r_dt_and_pooling(make_foreign):
    """r = 3, dt/tau = 0.2 from node metadata, SumPool and Flatten(start_dim=0): Norse with our
    node map must match the NIR semantics (our float64 reference)."""
    art = Artefact([make_foreign()], [], {"num_steps": 3})
    plan = lower(art)
    torch.manual_seed(2)
    x = torch.randn(7, 2, 8, 8) * 2
    want = run_plan(plan, x)
    got = NorseNetwork(art).run(x, plan.num_steps)
    for k in want.spikes:
        assert torch.equal(got.spikes[k], want.spikes[k]), k
    assert int(want.spikes["lif1"].sum()) > 0 and int(want.spikes["lif2"].sum()) > 0
    assert torch.allclose(got.outputs.double(), want.outputs, atol=1e-4)
