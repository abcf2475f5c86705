"""``nalln robustness`` end to end on the tiny run."""

from __future__ import annotations

import csv
import json

import pytest


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_sweep_writes_table_plots_and_is_deterministic(cli, run_copy, tmp_path, is_png):
    args = [
        "--only",
        "noise,brightness,occlusion",
        "--noise",
        "0,0.05",
        "--brightness=-0.25,0,0.25",
        "--occlusion",
        "0.1",
        "--n-resamples",
        "200",
        "-q",
    ]
    code, out, err = cli("robustness", run_copy, *args)
    assert code == 0, err
    assert "SYNTHETIC" in out
    d = run_copy / "robustness"
    rows = _rows(d / "robustness.csv")
    assert len(rows) == 2 + 3 + 1
    for r in rows:
        acc, lo, hi = float(r["accuracy"]), float(r["ci_low"]), float(r["ci_high"])
        assert 0 <= lo <= acc <= hi <= 1
        assert int(r["n"]) > 0 and 0 <= float(r["flagged_for_review"]) <= 1
    clean = [r for r in rows if float(r["severity"]) == 0]
    assert len({r["accuracy"] for r in clean}) == 1  # the clean point is the same everywhere
    assert all(float(r["drop_vs_clean"]) == 0 for r in clean)
    # a 25% darker image is below the training luminance: the quality check flags it
    dark = next(r for r in rows if r["perturbation"] == "brightness" and r["severity"] == "-0.25")
    assert float(dark["flagged_for_review"]) == 1.0
    data = json.loads((d / "robustness.json").read_text())
    assert data["synthetic"] is True
    assert data["grids"] == {
        "noise": [0.0, 0.05],
        "brightness": [-0.25, 0.0, 0.25],
        "occlusion": [0.1],
    }
    for name in ("noise", "brightness", "occlusion"):
        assert is_png(d / f"robustness_{name}.png")
    assert is_png(d / "robustness_overview.png") and is_png(d / "robustness_examples.png")
    assert "| -0.25 |" in (d / "robustness.md").read_text()
    # same seed, same numbers
    out2 = tmp_path / "again"
    assert cli("robustness", run_copy, *args, "--out", out2)[0] == 0
    assert _rows(out2 / "robustness.csv") == rows


def test_clahe_compare_and_compare_run(cli, run_copy, tiny_run, tmp_path):
    out = tmp_path / "cmp"
    code, stdout, err = cli(
        "robustness",
        run_copy,
        "--only",
        "brightness",
        "--brightness=-0.25,0",
        "--clahe-compare",
        "--compare-run",
        tiny_run,
        "--out",
        out,
        "--n-resamples",
        "100",
    )
    assert code == 0, err
    data = json.loads((out / "robustness.json").read_text())
    labels = [v["label"] for v in data["variants"]]
    assert len(labels) == 3 and "CLAHE at inference" in labels[1]
    assert data["variants"][1]["clahe_at_input"] is True
    assert data["variants"][1]["trained_with_clahe"] is False
    assert data["compare_run_training_overlap"][labels[2]] == 0  # same split manifest
    rows = _rows(out / "robustness.csv")
    assert len(rows) == 2 * 3
    # the other run is the same model: same accuracies as the first variant
    first = [r["accuracy"] for r in rows if r["variant"] == labels[0]]
    third = [r["accuracy"] for r in rows if r["variant"] == labels[2]]
    assert first == third


def test_bad_severity_and_names(cli, run_copy, tmp_path):
    code, _, err = cli("robustness", run_copy, "--noise", "0,2", "--out", tmp_path / "o")
    assert code == 2
    assert "noise variance 2 is out of range; use values in [0, 1]" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    code, _, err = cli("robustness", run_copy, "--only", "fog")
    assert code == 2 and "unknown perturbation(s) fog" in err
    with pytest.raises(SystemExit) as exc:  # argparse: not a number
        cli("robustness", run_copy, "--blur", "x")
    assert exc.value.code == 2
