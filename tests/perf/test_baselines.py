"""The benchmark baselines compute the same function as nalln's reference model.

The SpikingJelly model is a benchmark-only dependency (requirements/bench.txt, `make bench`):
its test is skipped where SpikingJelly is not installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module", autouse=True)
def _bench_on_path():
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))


@pytest.mark.parametrize("cfg", [{}, {"se_position": "spikes"}, {"batchnorm": False}])
def test_naive_snntorch_equals_reference(make_model, cfg) -> None:
    from naive_snntorch import NaiveSnnTorchNeurALLNet

    model = make_model("neurallnet", 32, width_multiplier=0.25, **cfg)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(NaiveSnnTorchNeurALLNet(model).eval()(x), model(x))


@pytest.mark.parametrize("cfg", [{}, {"se_position": "spikes"}, {"batchnorm": False}])
def test_spikingjelly_equals_reference_with_tau_folded(make_model, rates_of, cfg) -> None:
    pytest.importorskip("spikingjelly.activation_based.neuron")
    from sj_model import SJNeurALLNet, check_equivalence

    model = make_model("neurallnet", 32, width_multiplier=0.25, **cfg)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert rates_of(model, x)["stem_lif"] > 0.05
    res = check_equivalence(model, SJNeurALLNet(model), x)
    assert res["same_predictions"] and res["max_abs_logit_diff"] <= 1e-5
