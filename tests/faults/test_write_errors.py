"""The environment refuses a write in the middle of ``nalln train`` (issue 15, finding 10): a full
disk (a tiny tmpfs, as root) and a file-size limit (``RLIMIT_FSIZE``, anyone). Either ends in
one line naming the file and the resume command, exit 2, no temporary file left, and every
checkpoint already written still loads."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nalln.checkpoint import load_checkpoint

from .helpers import TINY_TRAIN_FLAGS, assert_clean_error, cli_env, nalln_cmd, stale_temps


def _train(data: Path, out: Path, preexec=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        nalln_cmd("train", "--data", data, "--out", out, *TINY_TRAIN_FLAGS, "--epochs", "3", "-q"),
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(),
        preexec_fn=preexec,
        check=False,
    )


def _judge(proc: subprocess.CompletedProcess[str], data: Path, out: Path, reason: str) -> None:
    line = assert_clean_error(proc, reason, f"nalln train --data {data} --out {out} --resume")
    named = line.split("cannot write ", 1)[1].split(":", 1)[0]
    assert Path(named).is_relative_to(out), line  # the file the user's run was writing
    assert not stale_temps(out)
    for ckpt in out.rglob("*.safetensors"):
        load_checkpoint(ckpt)  # SHA-256 checked: intact


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 450 kB tmpfs: room for the first epoch's checkpoints, not for replacing them."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the file-size-limit test covers the rest")
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=450k", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.slow
def test_a_full_disk_during_train_is_one_line_with_the_resume_hint(
    synth_root: Path, small_disk: Path
) -> None:
    out = small_disk / "run"
    proc = _train(synth_root, out)
    _judge(proc, synth_root, out, "No space left on device")
    assert any(out.rglob("*.safetensors")), "the disk should fill after the first checkpoint"


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))


@pytest.mark.slow
def test_a_file_size_limit_during_train_is_one_line_with_the_resume_hint(
    synth_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    proc = _train(synth_root, out, _limit_file_size)
    _judge(proc, synth_root, out, "File too large")
