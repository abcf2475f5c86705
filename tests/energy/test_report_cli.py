"""`nalln energy report`, `nalln hardware ...` and the demo step, end to end on the tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nalln.energy import run_demo_step

TARGETS = "loihi,loihi2,truenorth,gpu-t4,asic45-int8,asic45-fp32"


@pytest.fixture(scope="module")
def report_dir(tiny_run: Path, synth_root: Path, tmp_path_factory) -> Path:
    from nalln.energy.render import write_report
    from nalln.energy.report import ReportOptions, build_report

    out = tmp_path_factory.mktemp("energy")
    rep = build_report(
        tiny_run, synth_root, ReportOptions(targets=tuple(TARGETS.split(",")), n=10, split="all")
    )
    write_report(rep, out)
    return out


def test_report_files_and_keys(report_dir: Path) -> None:
    for f in (
        "energy.json",
        "energy.md",
        "energy_layers.csv",
        "energy_per_step.csv",
        "energy_targets.csv",
        "energy_summary.csv",
        "energy_headline.png",
        "energy_per_layer.png",
        "sops_vs_macs.png",
        "firing_rate.png",
    ):
        assert (report_dir / f).stat().st_size > 0, f
    rep = json.loads((report_dir / "energy.json").read_text())
    assert rep["synthetic"] is True and "SYNTHETIC" in rep["data_note"]
    assert rep["source"]["n_images"] == 10
    assert "per inference" in rep["rules"]["normalisation"]
    layers = rep["snn"]["layers"]
    assert layers[0]["name"] == "stem.conv" and layers[0]["computed"] == "once per inference"
    # per-step breakdown adds up to the per-inference figure
    for row in layers:
        assert sum(row["per_step"]["synaptic_acs"]) == pytest.approx(row["synaptic_acs"])
        assert sum(row["per_step"]["dense_ops"]) == pytest.approx(row["dense_ops"])
    totals = rep["snn"]["totals"]
    assert totals["synaptic_acs"] == pytest.approx(sum(r["synaptic_acs"] for r in layers))
    assert rep["ann"]["totals"]["dense_ops"] < totals["dense_ops"]  # T=1 vs T=4
    loihi2 = rep["targets"]["loihi2"]
    assert loihi2["energy_proxy"] == "loihi"
    assert "PROXY" in loihi2["models"]["ops"]["snn"]["notes"][0]
    assert loihi2["constants"]["e_synop"]["proxy_from"] == "loihi"
    # TrueNorth's 26 pJ includes neuron updates and static power: it is priced (and compared)
    # only under the memory-inclusive model; under 'ops' a chip gets an estimate, no verdict
    tn = rep["targets"]["truenorth"]["models"]["ops+memory"]
    assert tn["available"] and tn["snn"]["by_kind_pj"]["neuron updates"] == 0
    assert "break_even" not in rep["targets"]["loihi"]["models"]["ops"]
    assert "per-event figure includes" in rep["targets"]["loihi"]["models"]["ops"]["comparison"]
    be = rep["targets"]["asic45-int8"]["models"]["ops"]["break_even"]
    assert {"break_even_firing_rate", "measured_firing_rate", "verdict"} <= set(be)
    gpu = rep["targets"]["gpu-t4"]["models"]["dense"]
    assert gpu["break_even"]["break_even_firing_rate"] is None  # dense: no spike dependence
    assert not gpu["break_even"]["snn_wins"]
    assert any("lower bound" in c for c in rep["caveats"])
    assert any("once per image" in c for c in rep["caveats"])
    md = (report_dir / "energy.md").read_text()
    for needle in ("SYNTHETIC", "## Caveats", "break-even", "Where the SNN wins", "PROXY"):
        assert needle in md


def test_cli_report_prints_table(cli, tiny_run: Path, synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    code, stdout, err = cli(
        "energy",
        "report",
        str(tiny_run),
        "--data",
        str(synth_root),
        "--targets",
        "loihi,gpu-t4",
        "--out",
        str(out),
        "--n",
        "4",
        "--split",
        "all",
        "-q",
    )
    assert code == 0, err
    assert "SYNTHETIC" in stdout and "stem.conv" in stdout and "break-even" in stdout
    assert (out / "energy.json").is_file()


def test_cli_chip_under_ops_only_has_no_verdict(cli, tiny_run, synth_root, tmp_path) -> None:
    out = tmp_path / "rep"
    code, stdout, err = cli(
        "energy", "report", str(tiny_run), "--data", str(synth_root), "--targets", "loihi",
        "--models", "ops", "--out", str(out), "--n", "2", "--split", "all", "-q",
    )  # fmt: skip
    assert code == 0, err
    assert "No matched SNN vs ANN comparison" in stdout
    rep = json.loads((out / "energy.json").read_text())
    assert rep["summary"] == [] and "comparison" in rep["targets"]["loihi"]["models"]["ops"]
    assert "No matched" in (out / "energy.md").read_text()
    assert (out / "energy_headline.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--targets", "loihi9"], "known targets"),
        (["--targets", "gpu-t4", "--models", "ops"], "none of the models"),
        (["--n", "0"], "--n must be"),
        (["--models", "magic"], "unknown energy model"),
    ],
)
def test_cli_bad_input_one_line(cli, tiny_run, synth_root, tmp_path, args, needle) -> None:
    out = tmp_path / "never"
    code, stdout, err = cli(
        "energy", "report", str(tiny_run), "--data", str(synth_root), "--out", str(out), *args
    )
    assert code == 2
    assert err.startswith("nalln: error:") and err.count("\n") == 1 and needle in err
    assert not out.exists()  # nothing half-written


def test_cli_missing_constant_names_it(cli, tiny_run, synth_root, tmp_path) -> None:
    chip = tmp_path / "opsonly.toml"
    chip.write_text(
        'schema = 1\nid = "opsonly"\nname = "ops only"\nkind = "neuromorphic"\n\n'
        '[constants.e_synop]\nvalue = 26\nunit = "pJ"\nstatus = "assumption"\n'
        'source = "a test chip with a synaptic-event figure only"\n'
    )
    code, _, err = cli(
        "energy",
        "report",
        str(tiny_run),
        "--data",
        str(synth_root),
        "--out",
        str(tmp_path / "never"),
        "--targets",
        str(chip),
        "--models",
        "ops+memory",
    )
    assert code == 2 and "opsonly lacks e_neuron_update" in err
    assert not (tmp_path / "never").exists()


def test_cli_empty_data_set(cli, tiny_run, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(
        "energy",
        "report",
        str(tiny_run),
        "--data",
        str(empty),
        "--split",
        "all",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2 and err.count("\n") == 1 and "nalln: error:" in err


def test_cli_malformed_target_file(cli, tiny_run, synth_root, tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'schema = 1\nid = "x"\nname = "x"\nkind = "asic"\n[constants.e_add]\n'
        'value = 1\nunit = "W"\nstatus = "published"\nsource = "somewhere"\n'
    )
    code, _, err = cli(
        "energy",
        "report",
        str(tiny_run),
        "--data",
        str(synth_root),
        "--targets",
        str(bad),
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2 and "line 7" in err and "constants.e_add.unit" in err


def test_hardware_list_show(cli) -> None:
    code, out, _ = cli("hardware", "list")
    assert code == 0
    for tid in (
        "asic45-fp32",
        "asic45-int8",
        "loihi",
        "loihi2",
        "truenorth",
        "spinnaker",
        "spinnaker2",
        "gpu-t4",
        "gpu-a100",
        "gpu-h100",
        "cpu-xeon-8380",
    ):
        assert tid in out
    code, out, _ = cli("hardware", "show", "loihi")
    assert code == 0 and "23.6" in out and "Davies" in out and "published" in out
    code, out, _ = cli("hardware", "show", "loihi2", "--json")
    data = json.loads(out)
    assert data["energy_proxy"] == "loihi" and "e_synop" not in data["constants"]
    code, _, err = cli("hardware", "show", "nochip")
    assert code == 2 and "known targets" in err


def test_hardware_validate(cli, tmp_path) -> None:
    from nalln.hardware_targets import BUILTIN_DIR

    code, out, _ = cli("hardware", "validate", str(BUILTIN_DIR / "loihi.toml"))
    assert code == 0 and "ok" in out
    bad = tmp_path / "b.toml"
    bad.write_text(
        'id = "b"\nname = "b"\nkind = "gpu"\n[constants.tdp]\nvalue = 70\nunit = "W"\n'
        'status = "published"\n'
    )
    code, _, err = cli("hardware", "validate", str(bad))
    assert code == 2 and "constants.tdp.source" in err and "line 4" in err


def test_hardware_fit(cli, tiny_run: Path) -> None:
    code, out, err = cli("hardware", "fit", "--target", "loihi2", str(tiny_run), "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["cores"] >= len(res["layers"]) and res["chips"] == 1 and res["feasible"]
    assert res["limits"]["neurons_per_core"]["source"]
    assert any(L["input"].startswith("host") for L in res["layers"])  # stem neurons fed by host
    code, out, _ = cli("hardware", "fit", "--target", "loihi", str(tiny_run))
    assert code == 0 and "limits used" in out and "nengo" in out
    code, _, err = cli("hardware", "fit", "--target", "spinnaker", str(tiny_run))
    assert code == 2 and "neurons_per_core" in err
    code, _, err = cli("hardware", "fit", "--target", "gpu-t4", str(tiny_run))
    assert code == 2 and "neuromorphic" in err


def test_demo_step(tiny_run: Path, synth_root: Path, tmp_path: Path) -> None:
    summary = run_demo_step(tiny_run, synth_root, tmp_path / "demo", progress=False)
    assert summary["synthetic"] and summary["n_images"] >= 1
    assert Path(summary["files"]["energy.json"]).is_file()
    assert summary["energy"] and all("verdict" in e for e in summary["energy"])


def test_tables_are_dataframes_and_the_csv_files_hold_them(report_dir: Path) -> None:
    """Issue 15, part 4: energy per layer and per target as DataFrames in the API; the CSV
    files are written from the same frames."""
    import json

    import pandas as pd

    from nalln.energy.tables import frames

    rep = json.loads((report_dir / "energy.json").read_text())
    tables = frames(rep)
    assert set(tables) == {
        "energy_layers",
        "energy_per_step",
        "energy_targets",
        "energy_per_layer_targets",
        "energy_summary",
    }
    for name, frame in tables.items():
        assert isinstance(frame, pd.DataFrame) and len(frame) > 0, name
        on_disk = pd.read_csv(report_dir / f"{name}.csv", keep_default_na=False, dtype=str)
        assert list(on_disk.columns) == list(frame.columns), name
        assert len(on_disk) == len(frame), name
    layers = tables["energy_layers"]
    assert list(layers["name"]) == [r["name"] for r in rep["snn"]["layers"]]
    assert set(tables["energy_targets"]["target"]) >= {"loihi", "gpu-t4", "asic45-int8"}
