"""Fixtures of the analysis tests: an in-process CLI and private copies of the tiny run."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``nalln ...`` in-process; returns (exit code, stdout, stderr).

    Only command modules that exist are registered, so these tests run on a branch where other
    groups are not merged yet.
    """
    import nalln.cli.main as main_mod

    present = tuple(m for m in main_mod.COMMAND_MODULES if importlib.util.find_spec(m))
    monkeypatch.setattr(main_mod, "COMMAND_MODULES", present)

    def run(*argv: str):
        code = main_mod.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny run (commands write into their run folder)."""
    dst = tmp_path / "runs" / "tiny"
    shutil.copytree(tiny_run, dst)
    return dst


@pytest.fixture
def one_image(synth_root: Path) -> Path:
    return sorted((synth_root / "Original" / "Pro").glob("*.jpg"))[0]


@pytest.fixture
def is_png():
    """A check that a file exists and is a PNG."""

    def check(path: Path) -> bool:
        return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    return check
