"""The `nalln` command end to end on tiny synthetic data, and its answers to bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nalln.cli.main import main

TINY_SETS = [
    "--set",
    "model_config.width_multiplier=0.25",
    "--set",
    "model_config.head_hidden=16",
    "--set",
    "model_config.refine_channels=64",
]


def nalln(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nalln", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("cli")
    data, run = base / "data", base / "run"
    assert main(["data", "synth", str(data), "--n-per-class", "10", "--size", "32", "-q"]) == 0
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(run),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--image-size",
            "32",
            *TINY_SETS,
            "-q",
        ]
    )
    assert code == 0
    return data, run


def test_train_evaluate_predict_end_to_end(cli_run, capsys, tmp_path: Path) -> None:
    data, run = cli_run
    out = tmp_path / "eval"
    assert main(["evaluate", str(run), "--out", str(out), "--n-resamples", "500", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "accuracy" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert 0 <= m["accuracy"] <= 1 and len(m["accuracy_ci"]) == 2 and m["synthetic"] is True
    assert m["n"] == 4 and set(m["per_class"]) == {"Benign", "Early", "Pre", "Pro"}
    for f in ("metrics.md", "confusion_matrix.csv", "confusion_matrix.png", "predictions.csv"):
        assert (out / f).stat().st_size > 0
    assert (
        main(
            [
                "evaluate",
                str(run),
                "--external",
                str(data),
                "--out",
                str(tmp_path / "ext"),
                "--n-resamples",
                "200",
                "--json",
                "-q",
            ]
        )
        == 0
    )
    ext = json.loads(capsys.readouterr().out)
    assert ext["n"] == 40 and ext["source"]["subset"] == "external"

    csv = tmp_path / "pred.csv"
    img = next((data / "Original" / "Pre").glob("*.jpg"))
    dark = tmp_path / "dark.png"
    Image.fromarray((np.asarray(Image.open(img)) * 0.3).astype(np.uint8)).save(dark)
    assert main(["predict", str(run), str(img), str(dark), "--out", str(csv)]) == 0
    rows = csv.read_text().splitlines()
    assert rows[0].startswith("path,predicted,p_Benign") and len(rows) == 3
    assert "under-illuminated" in rows[2] and rows[2].count(",yes,") == 1


def test_model_summary_json(capsys) -> None:
    assert main(["model", "summary", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["parameters"] == 337_204 and s["fp32_bytes"] == 4 * 337_204
    assert main(["model", "list"]) == 0
    assert "neurallnet_no_se" in capsys.readouterr().out


def test_data_check_and_split(cli_run, capsys, tmp_path: Path) -> None:
    data, run = cli_run
    out = tmp_path / "check"
    assert main(["data", "check", str(data), "--splits", str(run), "--out", str(out), "-q"]) == 0
    report = json.loads((out / "check.json").read_text())
    assert report["synthetic"] and report["status_counts"] == {"ok": 40}
    assert (out / "files.csv").is_file() and (out / "duplicates.csv").is_file()
    assert main(["data", "split", str(data), "--out", str(tmp_path / "s.csv")]) == 0
    assert (tmp_path / "s.csv").read_text().count("\n") == 41


def test_demo_quick_writes_metrics_json(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("nalln.demo.DEMO_STEPS", ())
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "-q"]) == 0
    m = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert "accuracy" in m and "accuracy_ci" in m
    summary = json.loads((tmp_path / "d" / "demo.json").read_text())
    assert summary["synthetic"] is True and "train" in summary["steps"]
    assert "outputs (numbers" in capsys.readouterr().out


def _one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("nalln: error:")]
    assert len(lines) == 1 and pattern in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_user_errors_are_one_line_without_traceback(cli_run, tmp_path: Path) -> None:
    data, run = cli_run
    _one_line_error(
        nalln("train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")),
        "does not exist",
    )
    bad = tmp_path / "bad"
    for c in ("Benign", "Early", "Pre", "Pro", "Blasts"):
        (bad / c).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(bad / c / "a.png")
    _one_line_error(nalln("evaluate", str(run), "--external", str(bad)), "unknown class folder")
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    _one_line_error(nalln("predict", str(pt), str(bad)), "pickle")
    assert not (tmp_path / "r").exists()


def test_corrupt_image_in_training_data_fails_before_writing_a_checkpoint(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert main(["data", "synth", str(data), "--n-per-class", "10", "--size", "32", "-q"]) == 0
    victim = next((data / "Original" / "Early").glob("*.jpg"))
    victim.write_bytes(victim.read_bytes()[:100])
    proc = nalln(
        "train",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "--image-size",
        "32",
        "--epochs",
        "1",
        "-q",
    )
    _one_line_error(proc, victim.name)
    assert not (tmp_path / "run" / "checkpoints").exists()
