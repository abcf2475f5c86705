"""NIR export of a trained tiny NeurALLNet: round trips, folding, and the plan reference."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch

from nalln.conversion.convert import round_trip_differences
from nalln.conversion.export import export_model
from nalln.conversion.fold import mean_gates, static_se_model
from nalln.conversion.nir_io import chain_of, read_artefact, write_artefact
from nalln.conversion.plan import lower
from nalln.conversion.reference import run_torch_model
from nalln.ir.reference import run_plan
from nalln.models.fold import fold_batchnorm
from nalln.runs import load_model


@pytest.fixture(scope="module")
def tiny(tiny_run):
    loaded = load_model(tiny_run)
    torch.manual_seed(3)
    x = torch.randn(6, 3, 32, 32)
    return loaded, x


def test_batchnorm_folding_is_exact():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False)
    bn = torch.nn.BatchNorm2d(6).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 4, 5, 5)
    w, b = fold_batchnorm(conv.weight, None, bn)
    folded = torch.nn.functional.conv2d(x, torch.from_numpy(w), torch.from_numpy(b), padding=1)
    assert torch.allclose(folded, bn(conv(x)), atol=1e-5)


@pytest.mark.parametrize("mode", ["static", "hybrid"])
def test_round_trip_and_reference_match_torch(tiny, tmp_path, mode):
    loaded, x = tiny
    model = loaded.model
    gates = mean_gates(model, x) if mode == "static" else None
    exported = export_model(model, se_mode=mode, gates=gates, meta={"k": 1})
    files = write_artefact(tmp_path, exported)
    art = read_artefact(tmp_path)
    assert round_trip_differences(exported.segments, art.segments) == []
    n_se = sum(1 for b in model.stages if b.se is not None)
    assert len(art.segments) == (1 if mode == "static" else n_se + 1)
    assert len(art.gates) == (0 if mode == "static" else n_se)
    if mode == "hybrid":
        sidecar = json.loads(files["se_sidecar.json"].read_text())
        assert "sigmoid" in sidecar["operation"] and len(sidecar["gates"]) == n_se
    # LIF nodes carry dt and the reset rule; depthwise convs keep their groups
    seg = art.segments[0]
    lif = seg.nodes["stem_lif"]
    assert lif.metadata["reset"] in ("zero", b"zero") and float(lif.metadata["dt"]) > 0
    assert lif.tau.shape == tuple(lif.output_type["output"])
    dw = seg.nodes["stages_0_dw_conv"]
    assert int(dw.groups) == dw.weight.shape[0] > 1
    assert int(dw.input_type["input"][0]) == dw.weight.shape[0]  # fixed after nir.read
    assert isinstance(art.segments[-1].nodes["head_pool"], nir.AvgPool2d)
    # our float64 simulation of the NIR graph reproduces the torch model spike for spike
    reference = static_se_model(model, gates) if mode == "static" else model
    want = run_torch_model(reference, x)
    got = run_plan(lower(art), x)
    assert set(got.spikes) == set(want.spikes)
    for name in want.spikes:
        assert torch.equal(got.spikes[name], want.spikes[name]), name
    assert torch.allclose(got.logits, want.logits, atol=1e-4)


def test_stock_nir_reader_trips_on_depthwise(tiny, tmp_path):
    """The nir 1.0.8 bug we work around (toolchain.md): type_check=True fails on our file."""
    loaded, _ = tiny
    write_artefact(tmp_path, export_model(loaded.model, se_mode="hybrid"))
    with pytest.raises(ValueError, match="type mismatch"):
        nir.read(tmp_path / "segment_0.nir")
    graph = nir.read(tmp_path / "segment_0.nir", type_check=False)
    chain = chain_of(graph)
    assert chain[0].out_shape == (3, 32, 32)


def test_static_gates_are_means(tiny):
    loaded, x = tiny
    gates = mean_gates(loaded.model, x)
    assert gates and all(np.all((g > 0) & (g < 1)) for g in gates.values())
    static = static_se_model(loaded.model, gates)
    for name in gates:
        block = dict(static.named_modules())[name]
        assert np.allclose(block.se.scale.numpy(), gates[name])
