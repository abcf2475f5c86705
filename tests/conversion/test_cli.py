"""``nalln convert`` / ``nalln simulate`` end to end on the tiny run, and the demo step."""

from __future__ import annotations

import json

import nir
import pytest

from nalln.conversion.demo import run_demo_step

JSON_KEYS = {"top1_agreement", "spike_agreement", "accuracy", "seconds_per_image"}


def test_convert_to_nir_and_norse(run_cli, tiny_run, tmp_path, capsys):
    out = tmp_path / "nir"
    assert run_cli(["convert", str(tiny_run), "--to", "nir", "--out", str(out), "-q"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    summary = json.loads((out / "convert.json").read_text())
    assert summary["nir_round_trip"].startswith("identical")
    assert (out / "segment_0.nir").is_file() and (out / "se_sidecar.safetensors").is_file()
    out2 = tmp_path / "norse"
    assert (
        run_cli(
            ["convert", str(tiny_run), "--to", "norse", "--se", "static", "--out", str(out2), "-q"]
        )
        == 0
    )
    s2 = json.loads((out2 / "convert.json").read_text())
    assert s2["norse"]["lif_populations"] == 12 and (out2 / "norse_state.safetensors").is_file()
    assert "val_accuracy_change" in s2["static_se"]
    nir.read(out2 / "graph.nir", type_check=False)


@pytest.mark.lava
def test_convert_to_lava_static_fixed_point(run_cli, tiny_run, tmp_path, capsys):
    out = tmp_path / "lava"
    code = run_cli(
        [
            "convert",
            str(tiny_run),
            "--to",
            "lava",
            "--se",
            "static",
            "--fixed-point",
            "--calibration",
            "8",
            "--out",
            str(out),
            "-q",
            "--json",
        ]
    )
    assert code == 0
    s = json.loads(capsys.readouterr().out)
    assert s["netx"]["max_abs_difference"] < 1e-6
    for f in ("network.net", "fixed_point.json", "fixed_point.safetensors", "lava_plan.json"):
        assert (out / f).is_file(), f


@pytest.mark.norse
def test_simulate_norse_json(run_cli, tiny_run, tmp_path, capsys):
    code = run_cli(
        [
            "simulate",
            str(tiny_run),
            "--backend",
            "norse",
            "--n",
            "4",
            "--out",
            str(tmp_path / "s"),
            "--json",
            "-q",
        ]
    )
    assert code == 0
    m = json.loads(capsys.readouterr().out)
    assert set(m) >= JSON_KEYS
    assert m["top1_agreement"] == 1.0 and m["spike_agreement"]["overall"] >= 0.999
    assert set(m["spike_agreement"]["per_layer"]) >= {"stem_lif", "head_lif"}
    assert m["synthetic"] is True and m["images"] == 4
    assert (tmp_path / "s" / "report.md").is_file() and (tmp_path / "s" / "spike_agreement.png")


@pytest.mark.lava
def test_simulate_lava_fixed_point(run_cli, tiny_run, tmp_path, capsys):
    code = run_cli(
        [
            "simulate",
            str(tiny_run),
            "--backend",
            "lava",
            "--fixed-point",
            "--n",
            "2",
            "--calibration",
            "8",
            "--out",
            str(tmp_path / "s"),
            "--json",
            "-q",
        ]
    )
    assert code == 0
    m = json.loads(capsys.readouterr().out)
    assert set(m) >= JSON_KEYS
    assert m["fixed_point"]["lava_matches_emulator_bit_exactly"] is True
    assert m["seconds_per_image"] > 0


def test_simulate_foreign_graph_with_data(run_cli, make_foreign, synth_root, tmp_path, capsys):
    path = tmp_path / "foreign.nir"
    nir.write(path, make_foreign(size=32, channels=3))
    code = run_cli(
        [
            "simulate",
            str(path),
            "--backend",
            "norse",
            "--data",
            str(synth_root),
            "--n",
            "6",
            "--out",
            str(tmp_path / "s"),
            "--json",
            "-q",
        ]
    )
    assert code == 0
    m = json.loads(capsys.readouterr().out)
    assert m["reference"].startswith("nalln float64 simulation")
    assert m["top1_agreement"] == 1.0 and m["spike_agreement"]["overall"] == 1.0


@pytest.mark.lava
def test_demo_step(tiny_run, synth_root, tmp_path):
    s = run_demo_step(tiny_run, synth_root, tmp_path / "demo", progress=False)
    for backend in ("norse", "lava"):
        assert s[backend]["top1_agreement"] == 1.0
        assert (tmp_path / "demo" / f"simulate-{backend}" / "report.json").is_file()
    assert s["synthetic"] is True and s["seconds"] > 0
