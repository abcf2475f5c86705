"""Batch inference and sweeps under real torchrun (gloo, 2 CPU processes): the same files, in
the same order, as one process - byte for byte, except wall-clock timings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .helpers import TINY, assert_ok, nalln_errors, single, torchrun

pytestmark = pytest.mark.distributed

TIMING_KEYS = {"seconds_per_image", "build_seconds", "timing_s", "seconds"}


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _same_files(a: Path, b: Path, pattern: str) -> list[str]:
    names = sorted(p.name for p in a.glob(pattern))
    assert names == sorted(p.name for p in b.glob(pattern))
    for name in names:
        if name.endswith(".json"):
            ja, jb = (json.loads((d / name).read_text()) for d in (a, b))
            assert _without_timings(ja) == _without_timings(jb), name
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    return names


@pytest.mark.parametrize(
    "command",
    [
        ("evaluate", "{run}", "--out", "{out}", "--n-resamples", "200"),
        ("energy", "report", "{run}", "--split", "all", "--n-images", "13", "--out", "{out}"),
        ("simulate", "{run}", "--backend", "loihi-emulator", "--se", "static", "--out", "{out}"),
        ("robustness", "{run}", "--out", "{out}", "--n-resamples", "200", "--only", "noise,blur"),
    ],
    ids=lambda c: "-".join(c[:2]) if c[0] == "energy" else c[0],
)
def test_sharded_outputs_equal_one_process(command, tiny_run: Path, tmp_path: Path):
    def args(out: Path) -> list[str]:
        return [c.format(run=tiny_run, out=out) for c in command]

    assert_ok(torchrun(*args(tmp_path / "two"), cwd=tmp_path))
    assert_ok(single(*args(tmp_path / "one"), cwd=tmp_path))
    compared = _same_files(tmp_path / "two", tmp_path / "one", "*.csv")
    compared += _same_files(tmp_path / "two", tmp_path / "one", "*.json")
    assert compared
    for npz in (tmp_path / "one").glob("*.npz"):
        assert npz.read_bytes() == (tmp_path / "two" / npz.name).read_bytes()


def test_sharded_predict_equals_one_process(tiny_run: Path, synth_root: Path, tmp_path: Path):
    two = torchrun("predict", tiny_run, synth_root, "--out", tmp_path / "two.csv", cwd=tmp_path)
    assert_ok(two)
    assert_ok(single("predict", tiny_run, synth_root, "--out", tmp_path / "one.csv", cwd=tmp_path))
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert two.stdout.count("wrote") == 1  # rank 0 alone prints


def test_ablation_variants_over_ranks(synth_root: Path, tmp_path: Path):
    flags = (*TINY, "--epochs", "1", "--n-resamples", "200")
    variants = ("--variants", "neurallnet_no_se,neurallnet_no_bn,neurallnet_small_head")
    two = torchrun(
        "ablate", "--data", synth_root, "--out", tmp_path / "two", *flags, *variants, cwd=tmp_path
    )
    assert_ok(two)
    one = single(
        "ablate", "--data", synth_root, "--out", tmp_path / "one", *flags, *variants, cwd=tmp_path
    )
    assert_ok(one)
    a = json.loads((tmp_path / "two" / "ablation.json").read_text())["results"]
    b = json.loads((tmp_path / "one" / "ablation.json").read_text())["results"]
    keys = ("variant", "accuracy", "ci_low", "ci_high", "parameters", "epochs_run")
    assert [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]


def test_world_larger_than_the_data(tiny_run: Path, synth_root: Path, tmp_path: Path):
    one = tmp_path / "one-image"
    one.mkdir()
    shutil.copy(next(synth_root.rglob("*.jpg")), one)
    p = torchrun("predict", tiny_run, one, "--out", tmp_path / "p.csv", cwd=tmp_path)
    assert p.returncode != 0
    lines = nalln_errors(p.stderr)
    assert len(lines) == 1 and "world size is larger than the data" in lines[0], p.stderr
    assert not (tmp_path / "p.csv").exists()


def test_unreachable_rendezvous_is_one_line(tiny_run: Path, synth_root: Path, tmp_path: Path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    extra = dict(WORLD_SIZE="2", RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    p = single(
        "predict",
        tiny_run,
        synth_root,
        "--out",
        tmp_path / "p.csv",
        cwd=tmp_path,
        NALLN_RENDEZVOUS_TIMEOUT="2",
        **extra,
    )
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0, p.stderr
    assert "could not reach the rendezvous at 127.0.0.1:" + port in p.stderr
    assert not (tmp_path / "p.csv").exists()


def test_a_command_that_runs_in_one_process_is_refused_under_torchrun(tmp_path: Path):
    p = torchrun("hardware", "list", cwd=tmp_path)
    assert p.returncode != 0
    lines = nalln_errors(p.stderr)
    assert len(lines) == 1 and "does not run under torchrun" in lines[0], p.stderr


def test_simulate_on_lava_is_refused_under_torchrun(tiny_run: Path, tmp_path: Path):
    p = torchrun("simulate", tiny_run, "--backend", "norse", "--out", tmp_path / "s", cwd=tmp_path)
    assert p.returncode != 0
    lines = nalln_errors(p.stderr)
    assert len(lines) == 1 and "shards only --backend loihi-emulator" in lines[0], p.stderr
    assert not (tmp_path / "s").exists()
