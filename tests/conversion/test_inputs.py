"""``--inputs X.npz`` and ``--steps T`` on graphs other tools wrote: checked before any work,
held or per-step values of any channel count, accuracy only with labels."""

from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from nalln.conversion.inputs import load_inputs
from nalln.conversion.nir_io import Artefact
from nalln.conversion.plan import lower
from nalln.conversion.sources import as_channels
from nalln.errors import NallnError
from nalln.ir.drive import Drive
from nalln.ir.reference import run_plan

SHAPE = (2, 8, 8)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.fixture
def event_graph(tmp_path, make_foreign) -> Path:
    """A 2-channel (event-camera polarity) graph that does not record T."""
    g = make_foreign()
    g.metadata = {}
    path = tmp_path / "events.nir"
    nir.write(path, g)
    return path


def _events(n: int, steps: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, steps, *SHAPE)) < 0.3).astype(np.float32)


def test_held_and_per_step_inputs_are_told_apart(tmp_path):
    held = load_inputs(_npz(tmp_path / "a.npz", x=np.zeros((3, *SHAPE), np.float32)), SHAPE)
    per = load_inputs(_npz(tmp_path / "b.npz", x=_events(3, 5), y=np.arange(3)), SHAPE)
    assert held.drive is Drive.HELD and held.steps is None and held.y is None
    assert per.drive is Drive.PER_STEP and per.steps == 5 and per.y.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("arrays", "says"),
    [
        ({"z": np.zeros(2)}, "has no array `x` (it has: z)"),
        ({"x": np.zeros((2, *SHAPE))}, "`x` is float64; nalln reads float32"),
        (
            {"x": np.zeros((2, 3, 8, 8), np.float32)},
            "[2, 3, 8, 8] do not fit the graph's input [2, 8, 8]",
        ),
        ({"x": np.full((1, *SHAPE), np.nan, np.float32)}, "128 NaN or infinite values"),
        ({"x": np.zeros((2, *SHAPE), np.float32), "y": np.array([0.5, 1])}, "integer labels"),
        ({"x": np.zeros((2, *SHAPE), np.float32), "y": np.array([0, 1, 1])}, "shape [2]"),
        ({"x": np.zeros((0, *SHAPE), np.float32)}, "holds no inputs"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, arrays, says):
    with pytest.raises(NallnError) as exc:
        load_inputs(_npz(tmp_path / "x.npz", **arrays), SHAPE)
    assert says in str(exc.value) and "\n" not in str(exc.value)


def test_a_file_that_is_not_npz(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_text("hello")
    with pytest.raises(NallnError, match="is not a readable .npz file"):
        load_inputs(bad, SHAPE)
    with pytest.raises(NallnError, match="does not exist"):
        load_inputs(tmp_path / "none.npz", SHAPE)
    single = tmp_path / "x.npy"
    np.save(single, np.zeros((2, *SHAPE), np.float32))
    with pytest.raises(NallnError, match="holds a single array"):
        load_inputs(single, SHAPE)
    objects = _npz(tmp_path / "o.npz", x=np.array([object()], dtype=object))
    with pytest.raises(NallnError, match="is not a readable .npz file"):
        load_inputs(objects, SHAPE)


def test_per_step_reference_is_an_independent_float64_loop(make_foreign):
    """run_plan with a value per step equals a plain numpy loop of the NIR semantics."""
    g = make_foreign()
    plan = lower(Artefact([g], [], {}), 4)
    x = torch.from_numpy(_events(3, 4)) * 2.0
    got = run_plan(plan, x)
    n = g.nodes

    def lif(v, cur, node):
        decay = 1e-4 / np.asarray(node.tau, np.float64)
        v = (1 - decay) * v + decay * np.asarray(node.r) * cur
        s = v > np.asarray(node.v_threshold)
        return np.where(s, 0.0, v), s.astype(np.float64)

    w = np.asarray(n["conv"].weight, np.float64)
    v1, v2, outs = np.zeros((3, 4, 4, 4)), np.zeros((3, 6)), []
    for t in range(4):
        xt = np.pad(x[:, t].double().numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)))
        cur = np.zeros((3, 4, 4, 4))
        for i in range(4):
            for j in range(4):
                patch = xt[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
                cur[:, :, i, j] = np.einsum("bchw,ochw->bo", patch, w)
        cur += np.asarray(n["conv"].bias, np.float64)[None, :, None, None]
        v1, s1 = lif(v1, cur, n["lif1"])
        pooled = s1.reshape(3, 4, 2, 2, 2, 2).sum((3, 5)).reshape(3, -1)
        c2 = pooled @ np.asarray(n["fc1"].weight, np.float64).T + np.asarray(n["fc1"].bias)
        v2, s2 = lif(v2, c2, n["lif2"])
        outs.append(s2 @ np.asarray(n["fc2"].weight, np.float64).T)
    assert np.allclose(got.outputs.numpy(), np.stack(outs), atol=1e-9)
    assert int(got.spikes["lif1"].sum()) > 0 and int(got.spikes["lif2"].sum()) > 0


def test_grayscale_is_luma():
    rgb = torch.tensor([[255, 0, 0], [0, 255, 0], [10, 20, 30]], dtype=torch.uint8)
    rgb = rgb.T.reshape(1, 3, 1, 3)
    assert as_channels(rgb, 1).flatten().tolist() == [76, 150, 18]
    assert as_channels(rgb, 3) is rgb


@pytest.mark.norse
def test_simulate_events_with_and_without_labels(run_cli, event_graph, tmp_path, capsys):
    x = _events(4, 5)
    labelled = _npz(tmp_path / "l.npz", x=x, y=np.array([0, 1, 2, 3]))
    out = tmp_path / "s"
    code = run_cli(
        [
            "simulate",
            str(event_graph),
            "--backend",
            "norse",
            "--inputs",
            str(labelled),
            "--out",
            str(out),
            "--json",
            "-q",
        ]
    )
    assert code == 0
    m = json.loads(capsys.readouterr().out)
    assert m["num_steps"] == 5 and m["inputs"] == 4 and m["labels"] == "y of --inputs"
    assert m["spike_agreement"]["overall"] == 1.0 and m["accuracy"] is not None
    outputs = np.load(out / "outputs.npz")
    assert outputs["backend"].shape == (4, 5, 4) == outputs["reference"].shape
    assert np.allclose(outputs["backend"], outputs["reference"], atol=1e-4)

    bare = _npz(tmp_path / "u.npz", x=x)
    code = run_cli(
        [
            "simulate",
            str(event_graph),
            "--backend",
            "norse",
            "--inputs",
            str(bare),
            "--out",
            str(tmp_path / "s2"),
            "-q",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "not measured (no labels)" in text
    report = json.loads((tmp_path / "s2" / "report.json").read_text())
    assert report["accuracy"] is None and report["labels"].startswith("none")


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ([], "--inputs X.npz"),
        (["--inputs", "BAD"], "do not fit the graph's input [2, 8, 8]"),
        (["--inputs", "GOOD", "--steps", "3"], "--steps 3 disagrees with the 5 time steps"),
        (["--inputs", "GOOD", "--data", "DIR"], "not both"),
    ],
)
def test_simulate_bad_inputs_exit_2_and_write_nothing(
    run_cli, event_graph, tmp_path, capsys, extra, says
):
    good = _npz(tmp_path / "good.npz", x=_events(2, 5))
    bad = _npz(tmp_path / "bad.npz", x=np.zeros((2, 3, 8, 8), np.float32))
    extra = [{"BAD": str(bad), "GOOD": str(good), "DIR": str(tmp_path)}.get(a, a) for a in extra]
    out = tmp_path / "s"
    code = run_cli(["simulate", str(event_graph), "--backend", "norse", "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and says in err
    assert err.startswith("nalln: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_convert_needs_and_takes_steps(run_cli, event_graph, tmp_path, capsys):
    out = tmp_path / "c"
    assert run_cli(["convert", str(event_graph), "--to", "norse", "--out", str(out), "-q"]) == 2
    assert "pass --steps T" in capsys.readouterr().err and not out.exists()
    code = run_cli(
        ["convert", str(event_graph), "--to", "norse", "--steps", "4", "--out", str(out), "-q"]
    )
    assert code == 0
    summary = json.loads((out / "convert.json").read_text())
    assert summary["num_steps"] == 4 and summary["norse"]["output_size"] == 4


def test_convert_to_lava_without_examples_says_what_is_missing(
    run_cli, event_graph, tmp_path, capsys
):
    out = tmp_path / "c"
    code = run_cli(
        ["convert", str(event_graph), "--to", "lava", "--steps", "3", "--out", str(out), "-q"]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "netx: not written" in text and "--inputs X.npz" in text and "images" not in text
    code = run_cli(
        [
            "convert",
            str(event_graph),
            "--to",
            "lava",
            "--fixed-point",
            "--steps",
            "3",
            "--out",
            str(tmp_path / "f"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--fixed-point calibrates" in err and not (tmp_path / "f").exists()


def test_image_graph_of_one_channel_reads_folders_without_scoring_them(
    run_cli, make_foreign, synth_root, tmp_path, capsys
):
    path = tmp_path / "gray.nir"
    nir.write(path, make_foreign(size=32, channels=1))
    code = run_cli(
        [
            "simulate",
            str(path),
            "--backend",
            "norse",
            "--data",
            str(synth_root),
            "--n",
            "3",
            "--out",
            str(tmp_path / "s"),
            "--json",
            "-q",
        ]
    )
    assert code == 0
    m = json.loads(capsys.readouterr().out)
    assert m["accuracy"] is None and "does not record its classes" in m["labels"]
    assert m["spike_agreement"]["overall"] == 1.0


def test_event_graph_cannot_read_image_folders(run_cli, event_graph, synth_root, capsys):
    code = run_cli(["simulate", str(event_graph), "--backend", "norse", "--data", str(synth_root)])
    assert code == 2 and "pass --inputs X.npz" in capsys.readouterr().err


@pytest.mark.lava
def test_convert_to_lava_checks_netx_on_output_spikes(run_cli, make_foreign, tmp_path, capsys):
    """A graph ending in a spiking LIF, per-step event inputs: netx written, loaded back and
    equal to the fixed-point plan spike for spike (not read as a readout membrane)."""
    g = make_foreign(spiking_output=True)
    g.metadata = {}
    path = tmp_path / "spiking.nir"
    nir.write(path, g)
    xs = _npz(tmp_path / "ev.npz", x=_events(16, 8) * 2.0)
    out = tmp_path / "c"
    code = run_cli(["convert", str(path), "--to", "lava", "--inputs", str(xs), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    netx = json.loads((out / "convert.json").read_text())["netx"]
    assert netx["compared"].startswith("output spikes") and netx["spike_mismatches"] == 0
    assert netx["output_spikes_netx"] > 0 and (out / "network.net").is_file()
