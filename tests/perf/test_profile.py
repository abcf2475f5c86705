"""`nalln profile` and its library: counted sizes, measured latency/throughput/memory, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nalln.cli.main as cli_main
from nalln.analysis.profiling import (
    ProfileSpec,
    parse_sizes,
    parse_threads,
    peak_rss_delta,
    profile,
    run_demo_step,
    summarize,
)
from nalln.errors import NallnError

TINY = ["--image-size", "32", "--width-multiplier", "0.25"]
QUICK = ["--repeats", "3", "--warmup", "1", "--batch-sizes", "1,2", "--batch-repeats", "1"]


def _cli(monkeypatch, argv: list[str]) -> int:
    # only this command group: the worktree may not hold every module main.py lists
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("nalln.cli.profile",))
    return cli_main.main(["profile", *argv])


def test_summarize_known_samples() -> None:
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s["median_ms"] == 3.0 and s["min_ms"] == 1.0 and s["max_ms"] == 5.0
    assert s["mean_ms"] == 3.0 and s["n"] == 5


def test_parse_threads_and_sizes() -> None:
    assert parse_threads("1") == (1,)
    assert parse_threads("1,all,1")[0] == 1
    with pytest.raises(NallnError):
        parse_threads("0")
    with pytest.raises(NallnError):
        parse_threads("fast")
    assert parse_sizes("4,1,4") == (4, 1)
    with pytest.raises(NallnError):
        parse_sizes("1,-2")


def test_peak_rss_delta_sees_an_allocation() -> None:
    def allocate() -> None:
        t = torch.ones(50_000_000 // 4)  # 50 MB touched
        assert float(t[-1]) == 1.0

    mem = peak_rss_delta(allocate)
    assert 40 <= mem["rss_delta_mb"] <= 120
    assert mem["peak_rss_mb"] >= mem["rss_before_mb"] + mem["rss_delta_mb"] - 1e-6


def test_fresh_profile_summary() -> None:
    spec = ProfileSpec(
        threads=(1,), repeats=3, warmup=1, batch_sizes=(1, 2), batch_repeats=1, cuda=False
    )
    res = profile(overrides={"image_size": 32, "width_multiplier": 0.25}, spec=spec)
    s = res.summary
    model = __import__("nalln").create("neurallnet", image_size=32, width_multiplier=0.25)
    assert s["parameters"] == sum(p.numel() for p in model.parameters())
    assert s["fp32_size_bytes"] == 4 * s["parameters"]
    assert s["median_latency_ms"] == s["latency"][0]["median_ms"] > 0
    assert len(s["latency"][0]["samples_ms"]) == 3
    assert [t["batch_size"] for t in s["throughput"]] == [1, 2]
    assert all(t["images_per_s"] > 0 for t in s["throughput"])
    assert s["memory"]["cpu"]["rss_delta_mb"] >= 0
    assert s["source"]["weights"].startswith("fresh")
    assert res.files == {}  # no RUN and no --out: nothing written
    from nalln.analysis.profiling import profile_frames

    frames = profile_frames(s)  # issue 15, part 4: the profile tables as DataFrames
    assert list(frames["latency"].columns) == ["device", "threads", "run", "latency_ms"]
    assert list(frames["latency"]["latency_ms"]) == s["latency"][0]["samples_ms"]
    assert list(frames["throughput"]["batch_size"]) == [1, 2]


def test_cli_fresh_json(monkeypatch, capsys) -> None:
    assert _cli(monkeypatch, [*TINY, "--threads", "1", "--json", "--no-cuda", *QUICK]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["median_latency_ms"] > 0
    assert out["median_latency_setting"] == {"device": "cpu", "threads": 1, "batch_size": 1}
    assert out["image_size"] == 32 and out["num_steps"] == 4


def test_cli_run_writes_table_and_files(monkeypatch, capsys, tiny_run: Path, tmp_path) -> None:
    out = tmp_path / "prof"
    assert _cli(monkeypatch, [str(tiny_run), "--threads", "1,2", "--out", str(out), *QUICK]) == 0
    text = capsys.readouterr().out
    assert "SYNTHETIC" in text and "median ms" in text and "FP32 size" in text
    for name in (
        "profile.json",
        "latency.csv",
        "throughput.csv",
        "latency_histogram.png",
        "throughput.png",
    ):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "profile.json").read_text())
    assert summary["source"]["weights"] == "checkpoint"
    assert summary["source"]["synthetic"] is True
    assert {lat["threads"] for lat in summary["latency"]} >= {1}
    rows = (out / "latency.csv").read_text().splitlines()
    assert rows[0] == "device,threads,run,latency_ms"
    assert len(rows) == 1 + sum(len(lat["samples_ms"]) for lat in summary["latency"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["RUN", "--image-size", "64"], "only without RUN"),
        (["--threads", "0"], "at least 1"),
        (["--batch-sizes", "a,b"], "positive integers"),
        (["/no/such/run"], "does not exist"),
        (["--image-size", "8"], "smaller than the total stride"),
    ],
)
def test_cli_bad_input_one_line(monkeypatch, capsys, tiny_run, argv, message) -> None:
    argv = [str(tiny_run) if a == "RUN" else a for a in argv]
    assert _cli(monkeypatch, [*QUICK, *argv, "--no-cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nalln: error:") and message in err
    assert len(err.splitlines()) == 1


def test_demo_step(tiny_run: Path, synth_root: Path, tmp_path: Path) -> None:
    res = run_demo_step(tiny_run, synth_root, tmp_path / "p", progress=False)
    assert res["median_latency_ms"] > 0 and res["synthetic"] is True
    assert Path(res["files"]["throughput_curve"]).is_file()
