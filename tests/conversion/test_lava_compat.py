"""The Lava compatibility shim: what it fixes, and that it is needed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from nalln.conversion import lava_compat
from nalln.errors import NallnError


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_var_model_patch_keeps_future_import_and_compiles():
    src = textwrap.dedent(
        """
        from __future__ import annotations
        from dataclasses import dataclass

        @dataclass
        class ByteEncoder:
            base: int = 0

        @dataclass
        class CoreEncoder:
            x: ByteEncoder = ByteEncoder()
            y: ByteEncoder = ByteEncoder()
        """
    ).lstrip()
    with pytest.raises(ValueError, match="mutable default"):
        exec(compile(src, "var_model", "exec"), {})
    patched = lava_compat.patch_var_model_source(src)
    ns: dict = {}
    exec(compile(patched, "var_model", "exec"), ns)
    a, b = ns["CoreEncoder"](), ns["CoreEncoder"]()
    assert a.x is not b.x  # a fresh default per instance
    assert patched.splitlines()[0] == "from __future__ import annotations"
    assert patched.count("\n") == src.count("\n")  # line numbers unchanged


def test_netx_import_fails_without_shim_and_works_with_it():
    bare = _python("import lava.lib.dl.netx")
    assert bare.returncode != 0 and "mutable default" in bare.stderr
    shim = _python(
        """
        from nalln.conversion.lava_compat import import_lava
        import_lava("lava.lib.dl.netx")
        import lava.lib.dl.slayer as slayer
        try:
            slayer.obd.YOLOBase
        except ImportError as exc:
            print("stub:", exc)
        import multiprocessing
        print("method:", multiprocessing.get_start_method())
        """
    )
    assert shim.returncode == 0, shim.stderr
    assert "stub:" in shim.stdout and "torchvision" in shim.stdout
    assert "method: fork" in shim.stdout


def test_clear_error_when_start_method_is_spawn():
    res = _python(
        """
        import multiprocessing
        multiprocessing.set_start_method("spawn")
        from nalln.conversion.lava_compat import import_lava
        from nalln.errors import NallnError
        try:
            import_lava()
        except NallnError as exc:
            print("error:", exc)
        """
    )
    assert "error:" in res.stdout and "'fork'" in res.stdout


def test_missing_lava_says_how_to_install(monkeypatch):
    monkeypatch.setattr(lava_compat, "lava_installed", lambda: False)
    with pytest.raises(NallnError, match="make setup"):
        lava_compat.import_lava()
