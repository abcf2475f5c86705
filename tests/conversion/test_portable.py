"""The portable NIR form: stock nir.read, snnTorch 1.0 and Norse 1.1 load it and spike as nalln.

Everything here is real: files written and read with ``nir``, the stock importers
(``snntorch.import_nir.import_from_nir``, ``norse.torch.from_nir``) run on them. The upstream
tests at the end pin the importer bugs docs/conversion.md reproduces (they fail once upstream
fixes them: then update the docs).
"""

from __future__ import annotations

import copy
import json

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nalln.conversion.consumers import load_snntorch, run_norse, run_snntorch
from nalln.conversion.convert import round_trip_differences
from nalln.conversion.export import export_model
from nalln.conversion.fold import mean_gates, static_se_model
from nalln.conversion.nir_io import Artefact, graph_info
from nalln.conversion.plan import lower
from nalln.conversion.portable import PORTABLE_DT, dense_conv_weight, portable_graph
from nalln.conversion.reference import run_torch_model
from nalln.errors import NallnError
from nalln.ir.reference import Trace, run_plan
from nalln.runs import load_model

norse_torch = pytest.importorskip("norse.torch")

IMAGES = 4


@pytest.fixture(scope="module")
def active(tiny_run, tmp_path_factory):
    """The tiny run with BatchNorm gains x3 and shifts +0.6, so that every layer spikes (the
    trained tiny model with static gates is silent past stage 1, and equal silent layers would
    prove nothing); its exact export, the portable file and nalln's torch reference."""
    model = copy.deepcopy(load_model(tiny_run).model)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            mod.weight.data *= 3.0
            mod.bias.data += 0.6
    torch.manual_seed(3)
    x = torch.randn(IMAGES, 3, 32, 32)
    gates = mean_gates(model, x)
    exact = export_model(model, se_mode="static", gates=gates).graph
    path = tmp_path_factory.mktemp("portable") / "graph.nir"
    nir.write(path, portable_graph(exact))
    ref = run_torch_model(static_se_model(model, gates), x)
    assert all(int(v.sum()) > 0 for v in ref.spikes.values()), "a silent layer proves nothing"
    return {"exact": exact, "path": path, "x": x, "ref": ref, "steps": model.num_steps}


def assert_same_spikes(got: Trace, want: Trace, batch: int) -> None:
    assert set(got.spikes) == set(want.spikes)
    for name, s in want.spikes.items():
        assert torch.equal(got.spikes[name], s[:, :batch]), name
    assert torch.allclose(got.outputs.float(), want.outputs[:, :batch].float(), atol=1e-4)


# --- the portable graph itself ---------------------------------------------------------------


def test_stock_nir_read_accepts_portable(active):
    graph = nir.read(active["path"])  # stock reader, default type checks
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert "AvgPool2d" not in kinds and "SumPool2d" not in kinds
    convs = [n for n in graph.nodes.values() if isinstance(n, nir.Conv2d)]
    assert convs and all(int(c.groups) == 1 for c in convs)
    assert all(int(n.start_dim) < 0 for n in graph.nodes.values() if isinstance(n, nir.Flatten))
    for node in graph.nodes.values():
        if isinstance(node, nir.LIF):
            assert np.all(node.r == 1.0) and np.allclose(PORTABLE_DT / node.tau, 0.5, rtol=0)
    assert graph_info(graph)["portable"] == "nalln-nir-portable/1"
    with pytest.raises(ValueError, match="type mismatch"):  # the exact form does not pass
        path = active["path"].with_name("exact.nir")
        nir.write(path, active["exact"])
        nir.read(path)


def test_portable_simulated_by_nalln_equals_exact(active):
    exact = active["exact"]
    before = copy.deepcopy(exact)
    portable = nir.read(active["path"])
    assert round_trip_differences([before], [exact]) == []  # the rewrite left its input alone
    x = active["x"]
    want = run_plan(lower(Artefact([exact], [], graph_info(exact))), x)
    got = run_plan(lower(Artefact([portable], [], graph_info(portable))), x)
    for name, s in want.spikes.items():
        assert torch.equal(got.spikes[name], s), name
    assert torch.allclose(got.outputs, want.outputs, atol=1e-9)
    for name, s in active["ref"].spikes.items():  # and both equal nalln's torch model
        assert torch.equal(want.spikes[name], s), name


@pytest.mark.parametrize("batch", [1, IMAGES])
def test_snntorch_importer_reproduces_nalln(active, batch):
    got = run_snntorch(nir.read(active["path"]), active["x"][:batch], active["steps"])
    assert_same_spikes(got, active["ref"], batch)


@pytest.mark.norse
@pytest.mark.parametrize("batch", [1, IMAGES])
def test_norse_importer_reproduces_nalln(active, batch):
    graph = nir.read(active["path"])
    got = run_norse(graph, active["x"][:batch], active["steps"], dt=PORTABLE_DT)
    assert_same_spikes(got, active["ref"], batch)


@pytest.mark.norse
def test_norse_with_its_default_dt_differs(active):
    """Pinned difference: without ``dt=1e-4`` Norse steps 1 ms, tau is 0.2 ms, dt/tau = 5."""
    graph = nir.read(active["path"])
    got = run_norse(graph, active["x"][:1], active["steps"], dt=None)
    ref = active["ref"]
    assert any(not torch.equal(got.spikes[k], s[:, :1]) for k, s in ref.spikes.items())


def test_dense_conv_weight_equals_grouped_conv():
    torch.manual_seed(0)
    for c_in, c_out, groups in ((6, 6, 6), (4, 8, 2), (3, 6, 3)):
        w = torch.randn(c_out, c_in // groups, 3, 3, dtype=torch.float64)
        x = torch.randn(2, c_in, 5, 5, dtype=torch.float64)
        dense = torch.from_numpy(dense_conv_weight(w.numpy(), groups))
        assert dense.shape == (c_out, c_in, 3, 3)
        assert int((dense != 0).sum()) == w.numel()
        want = F.conv2d(x, w, padding=1, groups=groups)
        assert torch.allclose(F.conv2d(x, dense, padding=1), want, atol=1e-12)


def test_foreign_graph_pooling_r_and_dt(make_foreign):
    """Another tool's chain (SumPool2d, Flatten(start_dim=0), r = 3, dt = 0.1 ms in node
    metadata): the portable form spikes as the exact one in nalln, snnTorch and Norse."""
    exact = make_foreign()
    portable = portable_graph(exact)
    info = {"num_steps": 3}
    torch.manual_seed(2)
    x = torch.randn(5, 2, 8, 8) * 2
    want = run_plan(lower(Artefact([exact], [], info)), x)
    assert int(want.spikes["lif2"].sum()) > 0
    got = run_plan(lower(Artefact([portable], [], info)), x)
    for name, s in want.spikes.items():
        assert torch.equal(got.spikes[name], s), name
    for trace in (
        run_snntorch(portable, x, 3),
        run_norse(portable, x, 3, dt=PORTABLE_DT),
    ):
        for name, s in want.spikes.items():
            assert torch.equal(trace.spikes[name], s), name


def test_portable_refuses_what_it_cannot_express(make_foreign, tiny_run):
    g = make_foreign()
    g.nodes["lif2"] = nir.LIF(
        tau=np.full(6, 5e-4),
        r=np.full(6, 3.0),
        v_leak=np.zeros(6),
        v_threshold=np.linspace(0.5, 1.0, 6),
        metadata={"dt": 1e-4},
    )
    with pytest.raises(NallnError, match="'lif2' has non-uniform threshold"):
        portable_graph(g)
    hybrid = export_model(load_model(tiny_run).model, se_mode="hybrid")
    with pytest.raises(NallnError, match="folds r into a Conv2d/Affine/Linear"):
        portable_graph(hybrid.segments[1])  # starts with the LIF after an SE gate


# --- nalln convert --portable ------------------------------------------------------------------


def test_cli_help_names_portable(run_cli, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["convert", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--portable" in out and "snnTorch" in out and "implies" in out


def test_cli_portable_writes_a_graph_stock_nir_reads(run_cli, tiny_run, tmp_path, capsys):
    out = tmp_path / "portable"
    assert run_cli(["convert", str(tiny_run), "--to", "nir", "--portable", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "portable: stock nir.read passes" in printed and "dt=0.0001" in printed
    graph = nir.read(out / "graph.nir")  # stock reader, default type checks
    assert graph_info(graph)["se_mode"] == "static"
    summary = json.loads((out / "convert.json").read_text())
    p = summary["portable"]
    assert p["stock_nir_read"].startswith("passes") and p["dt"] == PORTABLE_DT
    assert p["values_portable"] > p["values_exact"] and len(p["dense_convs"]) == 5
    assert p["folded_pools"] == ["head_pool"]
    assert json.loads((out / "manifest.json").read_text())["info"]["portable"]["form"]
    x = torch.zeros(2, 3, 32, 32)
    assert run_snntorch(graph, x, 2).outputs.shape == (2, 2, 4)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--to", "lava", "--portable"], "--portable applies to --to nir"),
        (["--to", "nir", "--portable", "--se", "hybrid"], "use --se static"),
    ],
)
def test_cli_portable_bad_combinations(run_cli, tiny_run, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert run_cli(["convert", str(tiny_run), *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nalln: error: ") and message in err and err.count("\n") == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


# --- the upstream bugs docs/conversion.md reproduces (pinned: fail when fixed upstream) -------


def _depthwise_graph() -> nir.NIRGraph:
    conv = nir.Conv2d(
        input_shape=(8, 8),
        weight=np.ones((4, 1, 3, 3), np.float32),
        stride=1,
        padding=1,
        dilation=1,
        groups=4,
        bias=np.zeros(4, np.float32),
    )
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4, 8, 8])}),
        "conv": conv,
        "output": nir.Output(output_type={"output": np.array([4, 8, 8])}),
    }
    return nir.NIRGraph(nodes, [("input", "conv"), ("conv", "output")], type_check=False)


def test_upstream_nir_conv_type_inference_ignores_groups():
    g = _depthwise_graph()
    with pytest.raises(ValueError, match=r"type mismatch: input.output: \[\[4 8 8\]\]"):
        nir.NIRGraph(g.nodes, g.edges)  # type_check=True, as nir.read does


@pytest.mark.parametrize("load", [load_snntorch, norse_torch.from_nir], ids=["snntorch", "norse"])
def test_upstream_importers_break_on_groups(load):
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        load(_depthwise_graph())


@pytest.mark.parametrize("load", [load_snntorch, norse_torch.from_nir], ids=["snntorch", "norse"])
def test_upstream_flatten_start_dim_0_flattens_the_batch(load):
    g = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array([2, 1, 1])}),
        nir.Flatten(input_type={"input": np.array([2, 1, 1])}, start_dim=0),
        nir.Affine(weight=np.eye(3, 2, dtype=np.float32), bias=np.zeros(3, np.float32)),
        nir.Output(output_type={"output": np.array([3])}),
    )
    net = load(g)
    assert net(torch.ones(1, 2, 1, 1))[0].shape == (3,)  # the batch axis is gone
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        net(torch.ones(4, 2, 1, 1))


def test_upstream_norse_drops_avgpool2d():
    g = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array([1, 4, 4])}),
        nir.Conv2d(
            input_shape=(4, 4),
            weight=np.ones((1, 1, 1, 1), np.float32),
            stride=1,
            padding=0,
            dilation=1,
            groups=1,
            bias=np.zeros(1, np.float32),
        ),
        nir.AvgPool2d(
            kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])
        ),
        nir.Output(output_type={"output": np.array([1, 2, 2])}),
    )
    out, _ = norse_torch.from_nir(g)(torch.ones(1, 1, 4, 4))
    assert out.shape == (1, 1, 4, 4)  # NIR says [1, 1, 2, 2]


def test_upstream_lif_r_and_dt():
    """NIR LIF, dt = 1 ms, tau = 2 ms, r = 2, threshold 0.9, input 1: v = 1 every step, a spike
    every step. snnTorch fixes dt = 0.1 ms; Norse ignores r: neither spikes in 3 steps."""
    lif = nir.LIF(
        tau=np.full(1, 2e-3),
        r=np.full(1, 2.0),
        v_leak=np.zeros(1),
        v_threshold=np.full(1, 0.9),
        v_reset=np.zeros(1),
    )
    g = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array([1])}),
        lif,
        nir.Output(output_type={"output": np.array([1])}),
    )
    v, want = 0.0, []
    for _ in range(3):  # NIR's LIF, Euler step dt: v += dt/tau (v_leak - v + r I)
        v += 1e-3 / 2e-3 * (0.0 - v + 2.0 * 1.0)
        want.append(float(v > 0.9))
        v = 0.0 if v > 0.9 else v
    assert want == [1.0, 1.0, 1.0]
    x = torch.ones(1, 1)
    assert run_snntorch(g, x, 3).outputs.reshape(-1).tolist() == [0.0, 0.0, 0.0]
    assert run_norse(g, x, 3, dt=1e-3).outputs.reshape(-1).tolist() == [0.0, 0.0, 0.0]
