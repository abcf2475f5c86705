"""Bad input: one-line errors, non-zero exit, nothing half-written."""

from __future__ import annotations

import h5py
import nir
import numpy as np
import pytest

from nalln.conversion.nir_io import SUPPORTED_NAMES, Artefact, read_graph
from nalln.conversion.plan import lower
from nalln.errors import NallnError


def test_text_file_is_not_nir(tmp_path):
    p = tmp_path / "model.nir"
    p.write_text("hello")
    with pytest.raises(NallnError, match="is not a NIR file"):
        read_graph(p)


def test_hdf5_without_graph(tmp_path):
    p = tmp_path / "x.nir"
    with h5py.File(p, "w") as f:
        f.create_dataset("a", data=1)
    with pytest.raises(NallnError, match="not a NIR graph"):
        read_graph(p)


def test_unsupported_node_is_named(tmp_path, make_foreign):
    g = make_foreign()
    g.nodes["lif2"] = nir.CubaLI(
        tau_syn=np.ones(6), tau_mem=np.ones(6), r=np.ones(6), v_leak=np.zeros(6)
    )
    p = tmp_path / "g.nir"
    nir.write(p, g)
    with pytest.raises(NallnError) as exc:
        read_graph(p)
    msg = str(exc.value)
    assert "node 'lif2' is a CubaLI," in msg and SUPPORTED_NAMES in msg


def test_shapes_that_do_not_chain(tmp_path, make_foreign):
    g = make_foreign()
    g.nodes["fc2"] = nir.Affine(weight=np.ones((4, 7), np.float32), bias=np.zeros(4, np.float32))
    p = tmp_path / "g.nir"
    nir.write(p, g)
    with pytest.raises(NallnError, match="shapes do not chain at node 'fc2'"):
        read_graph(p)


def test_a_merge_of_shapes_that_do_not_meet_names_both(make_foreign):
    g = make_foreign()
    g.edges.append(("lif1", "output"))
    with pytest.raises(NallnError) as exc:
        lower(Artefact([g], [], {"num_steps": 2}))
    assert (
        "shapes do not meet at node 'output', which sums its inputs: 'fc2' gives [4] but "
        "'lif1' gives [4, 4, 4]"
    ) in str(exc.value)


def test_lava_needs_uniform_threshold(make_foreign):
    g = make_foreign()
    g.nodes["lif2"].v_threshold = np.linspace(0.5, 1.0, 6)
    with pytest.raises(NallnError, match="non-uniform threshold"):
        lower(Artefact([g], [], {"num_steps": 2}))


def test_cli_error_is_one_line_and_writes_nothing(run_cli, tmp_path, capsys):
    bad = tmp_path / "bad.nir"
    bad.write_text("not hdf5")
    out = tmp_path / "out"
    code = run_cli(["convert", str(bad), "--to", "nir", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("nalln: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_cli_simulate_foreign_graph_without_data(run_cli, foreign_nir, capsys):
    code = run_cli(["simulate", str(foreign_nir), "--backend", "norse", "-q"])
    assert code == 2
    assert "--data" in capsys.readouterr().err


def test_node_type_nir_does_not_know_is_reported(tmp_path, make_foreign):
    p = tmp_path / "g.nir"
    nir.write(p, make_foreign())
    with h5py.File(p, "r+") as f:
        del f["node/nodes/lif1/type"]
        f["node/nodes/lif1/type"] = np.bytes_("Teleporter")
    with pytest.raises(NallnError, match="a node has a type that nir .* does not know") as exc:
        read_graph(p)
    assert SUPPORTED_NAMES in str(exc.value)


def test_a_longer_cycle_is_refused_naming_its_nodes(make_foreign):
    rec = make_foreign()  # a loop back to an earlier layer (not neuron -> w -> same neuron)
    rec.nodes["w_back"] = nir.Linear(weight=np.ones((6, 6), dtype=np.float32))
    rec.edges += [("lif2", "w_back"), ("w_back", "fc1")]
    with pytest.raises(NallnError) as exc:
        lower(Artefact([rec], [], {"num_steps": 2}))
    msg = str(exc.value)
    assert "edge ('w_back', 'fc1') closes a cycle (fc1 -> lif2 -> w_back -> fc1)" in msg
    assert "one Lava step per hop" in msg and "\n" not in msg
