"""Helpers for the fault tests: run ``python -m nalln`` as a real subprocess and judge its exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The tiny model of tests/conftest.py as `nalln train` flags.
TINY_TRAIN_FLAGS = (
    "--image-size",
    "32",
    "--width-multiplier",
    "0.25",
    "--set",
    "model_config.head_hidden=16",
    "--set",
    "model_config.refine_channels=64",
    "--batch-size",
    "8",
)


def cli_env(**extra: str) -> dict[str, str]:
    """One thread (bit-identical runs), unbuffered output (lines arrive as printed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NALLN_TEST_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def nalln_cmd(*args: str | os.PathLike) -> list[str]:
    return [sys.executable, "-m", "nalln", *map(str, args)]


def run_cli(
    *args: str | os.PathLike, cwd: Path | None = None, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        nalln_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=cli_env(**env),
        check=False,
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Non-zero exit, no traceback, exactly one ``nalln: error:`` line that names the problem."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stdout, err)
    assert "Traceback" not in err + proc.stdout, err
    errors = [ln for ln in err.splitlines() if ln.startswith("nalln: error:")]
    assert len(errors) == 1, err
    others = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("nalln: ")]
    assert not others, err  # only our own one-line messages on stderr
    for needle in needles:
        assert needle.lower() in errors[0].lower(), (needle, errors[0])
    return errors[0]


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def stale_temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))
