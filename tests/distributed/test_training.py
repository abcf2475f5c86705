"""DDP training under real torchrun (gloo, 2 CPU processes) against one process.

Two processes with ``--sync-bn`` compute the same update as one process on the same global
batch: the same seeded shuffle and augmentation of the whole batch on every rank, each rank's
loss weighted by its share, BatchNorm statistics over the global batch. Not bitwise: the
all-reduce adds the two halves' gradients in another order than one backward pass does
(float addition is not associative), so weights differ in the last bits (measured ~2e-6 after
two epochs); spiking thresholds amplify such differences over many epochs (0.06 after 30), so
the comparisons below are over a few epochs, with tolerances stated.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import (
    TIMEOUT,
    TINY,
    assert_ok,
    env,
    max_weight_difference,
    nalln_errors,
    single,
    torchrun,
    torchrun_cmd,
)

pytestmark = pytest.mark.distributed

WEIGHT_TOLERANCE = 1e-4  # two epochs; measured ~2e-6
RESUME_TOLERANCE = 5e-3  # four epochs, two of them in another world size


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _last(run: Path) -> Path:
    return run / "checkpoints" / "last.safetensors"


@pytest.fixture(scope="module")
def one_process(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: 4 epochs in one process, global batch 8, augmentation on, sync-BN set."""
    cwd = tmp_path_factory.mktemp("single")
    flags = (*TINY, "--epochs", "4", "--patience", "50", "--sync-bn")
    assert_ok(single("train", "--data", synth_root, "--out", cwd / "run", *flags, cwd=cwd))
    return cwd / "run"


def test_two_processes_train_as_one(synth_root: Path, tmp_path: Path, one_process: Path):
    flags = (*TINY, "--epochs", "2", "--patience", "50", "--sync-bn")
    p = torchrun("train", "--data", synth_root, "--out", tmp_path / "run", *flags, cwd=tmp_path)
    assert_ok(p)
    assert p.stdout.count("best validation accuracy") == 1  # rank 0 alone prints
    ref = single("train", "--data", synth_root, "--out", tmp_path / "one", *flags, cwd=tmp_path)
    assert_ok(ref)
    two, one = _rows(tmp_path / "run"), _rows(tmp_path / "one")
    assert [r["val_accuracy"] for r in two] == [r["val_accuracy"] for r in one]
    for a, b in zip(two, one, strict=True):
        assert abs(float(a["train_loss"]) - float(b["train_loss"])) < 1e-5
        assert a["train_accuracy"] == b["train_accuracy"]
    assert (
        max_weight_difference(_last(tmp_path / "run"), _last(tmp_path / "one")) < WEIGHT_TOLERANCE
    )
    assert (tmp_path / "run" / "splits.csv").read_text() == (
        tmp_path / "one" / "splits.csv"
    ).read_text()


def _rank_pids(torchrun_pid: int) -> dict[int, int]:
    """rank -> pid of the workers torchrun started (read from their environment)."""
    out = subprocess.run(["pgrep", "-P", str(torchrun_pid)], capture_output=True, text=True)
    ranks = {}
    for pid in map(int, out.stdout.split()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                ranks[int(item[5:])] = pid
    return ranks


def test_kill_one_rank_then_resume_in_another_world_size(
    synth_root: Path, tmp_path: Path, one_process: Path
):
    run = tmp_path / "run"
    flags = (*TINY, "--epochs", "4", "--patience", "50", "--sync-bn")
    proc = subprocess.Popen(
        torchrun_cmd("train", "--data", synth_root, "--out", run, *flags),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "metrics.csv").is_file() and len(_rows(run)) >= 2:
                break
            time.sleep(0.2)
        ranks = _rank_pids(proc.pid)
        assert proc.poll() is None and 1 in ranks, "training ended before it could be killed"
        import os

        os.kill(ranks[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    mine = nalln_errors(err)
    assert len(mine) == 1, err[-2000:]  # rank 0 says how to continue, once
    assert "--resume" in mine[0]
    assert not [p for p in run.rglob("*") if ".tmp" in p.name], "a half-written file was left"
    kept = _rows(run)
    assert 2 <= len(kept) < 4

    resumed = single("train", "--data", synth_root, "--out", run, "--resume", "-q", cwd=tmp_path)
    assert_ok(resumed)
    rows = _rows(run)
    assert len(rows) == 4 and rows[: len(kept)] == kept
    assert max_weight_difference(_last(run), _last(one_process)) < RESUME_TOLERANCE


def test_settings_that_differ_between_ranks_are_refused(synth_root: Path, tmp_path: Path):
    """Two ranks started by hand with different --lr: one line from rank 0, both exit 2."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    procs = []
    for rank, lr in ((0, "0.001"), (1, "0.01")):
        e = env(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
        e["MASTER_PORT"] = port
        cmd = ["-m", "nalln", "train", "--data", str(synth_root), "--out", str(tmp_path / "run")]
        procs.append(
            subprocess.Popen(
                [__import__("sys").executable, *cmd, *TINY, "--epochs", "1", "--lr", lr],
                cwd=tmp_path,
                env=e,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [p.communicate(timeout=TIMEOUT) for p in procs]
    assert [p.returncode for p in procs] == [2, 2]
    lines = nalln_errors(results[0][1]) + nalln_errors(results[1][1])
    assert len(lines) == 1, lines
    assert "rank 1 differs from rank 0 in train_config.lr" in lines[0]
    assert not (tmp_path / "run").exists()
