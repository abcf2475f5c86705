"""Helpers for the energy / hardware tests."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path):
    """Run ``nalln ...`` in-process: returns (exit code, stdout, stderr).

    Only command modules that exist are registered, so this area's commands can be tested on a
    branch where other groups are not merged yet. User target folders are isolated.
    """
    import nalln.cli.main as main_mod

    present = tuple(m for m in main_mod.COMMAND_MODULES if importlib.util.find_spec(m))
    monkeypatch.setattr(main_mod, "COMMAND_MODULES", present)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NALLN_TARGETS_DIR", raising=False)

    def run(*argv: str):
        code = main_mod.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run
