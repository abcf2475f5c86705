"""Starting nalln under real torchrun (gloo, CPU) from a test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# the tiny model of tests/faults (TINY_TRAIN_FLAGS), quiet
TINY = tuple(
    "--image-size 32 --width-multiplier 0.25 --set model_config.head_hidden=16 "
    "--set model_config.refine_channels=64 --batch-size 8 -q".split()
)
TIMEOUT = 420  # seconds per command: two processes on a shared 2-core machine


def env(**extra: str) -> dict[str, str]:
    """One thread per rank (two ranks on two cores), no inherited torchrun variables."""
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "NALLN_TEST_")
    e = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    e.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    e.update(extra)
    return e


def torchrun_cmd(*args: str | os.PathLike, nproc: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "nalln",
        *map(str, args),
    ]


def torchrun(
    *args: str | os.PathLike, cwd: Path, nproc: int = 2
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        torchrun_cmd(*args, nproc=nproc),
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def single(*args: str | os.PathLike, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nalln", *map(str, args)],
        cwd=cwd,
        env=env(**extra),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def nalln_errors(stderr: str) -> list[str]:
    """nalln's own lines (torchrun adds its failure report around them)."""
    return [line for line in stderr.splitlines() if line.startswith("nalln: ")]


def max_weight_difference(a: Path, b: Path) -> float:
    from nalln.checkpoint import load_checkpoint

    sa, sb = load_checkpoint(a).state_dict, load_checkpoint(b).state_dict
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
