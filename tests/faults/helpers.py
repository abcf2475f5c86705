"""Helpers for the fault tests: run ``python -m nalln`` as a real subprocess and judge its exit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

from nalln.errors import NallnError

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


# Fuzzing: fixed example counts and derandomised generation, so CI runs the same inputs every
# time. NALLN_FUZZ_SCALE=10 runs ten times as many; NALLN_FUZZ_RANDOM=1 draws fresh ones.
FUZZ_SCALE = float(os.environ.get("NALLN_FUZZ_SCALE", "1"))


def fuzz_settings(max_examples: int, deadline_s: float | None = 5.0) -> settings:
    """Per-example deadline catches hangs-in-the-making; the hang guard in conftest.py the rest.
    ``None``: the test enforces its own time limit (the NIR worker)."""
    return settings(
        max_examples=max(1, int(max_examples * FUZZ_SCALE)),
        deadline=None if deadline_s is None else timedelta(seconds=deadline_s),
        derandomize=os.environ.get("NALLN_FUZZ_RANDOM") != "1",
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


def works_or_clean_error(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``: it may return or raise a one-line NallnError; anything else fails the test."""
    try:
        return fn(*args, **kwargs)
    except NallnError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
        assert "Traceback" not in msg
        return exc
