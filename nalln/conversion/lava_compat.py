"""Make lava-nc 0.10 / lava-dl 0.6 import on Python 3.11 without touching site-packages.

Both projects are archived and declare Python < 3.11. Two things break on 3.11 (see
docs/conversion.md, "Lava on Python 3.11"):

1. ``lava/magma/compiler/var_model.py`` uses ``ByteEncoder()`` as a dataclass field default.
   Python 3.11 rejects unhashable defaults (``ValueError: mutable default``). We load that one
   module through our own loader, which compiles its source with the three encoder dataclasses'
   defaults rewritten to ``field(default_factory=ByteEncoder)`` - the fix upstream would make.
2. ``lava.lib.dl.slayer`` imports its object-detection sub-package, which imports torchvision
   (not installable beside our CPU torch). When torchvision is missing we serve a stub module for
   ``lava.lib.dl.slayer.object_detection`` whose attributes raise an ImportError that says why.

Lava also calls ``multiprocessing.set_start_method('fork')`` at import; :func:`import_lava` checks
the start method first so that a clash gives a clear message instead of a RuntimeError deep in
Lava. Call :func:`install` (or :func:`import_lava`) before importing anything from ``lava``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import multiprocessing
import re
import sys
import types
from collections.abc import Iterator, Sequence

from nalln.errors import NallnError

VAR_MODEL = "lava.magma.compiler.var_model"
OBJECT_DETECTION = "lava.lib.dl.slayer.object_detection"
FORK_MODULE = "lava.magma.runtime.message_infrastructure.multiprocessing"
INSTALL_HINT = (
    "install the pinned Lava wheels with `make setup` (they go in with pip --no-deps "
    "--ignore-requires-python, see requirements/no-deps.txt)"
)
_BYTE_ENCODER_DEFAULT = re.compile(r"(:\s*ByteEncoder\s*=\s*)ByteEncoder\(\)")


def patch_var_model_source(source: str) -> str:
    """``x: ByteEncoder = ByteEncoder()`` -> ``x: ByteEncoder = field(default_factory=...)``."""
    # An inline import keeps line numbers and any ``from __future__`` line where they are.
    return _BYTE_ENCODER_DEFAULT.sub(
        r"\1__import__('dataclasses').field(default_factory=ByteEncoder)", source
    )


class _PatchedSourceLoader(importlib.machinery.SourceFileLoader):
    """Compile the module from its (patched) source; never read or write a stale .pyc."""

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        source = self.get_data(path).decode("utf-8")
        return compile(patch_var_model_source(source), path, "exec", dont_inherit=True)


class _ObjectDetectionStub(types.ModuleType):
    """Stands in for slayer's object-detection package, which needs torchvision."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            f"{OBJECT_DETECTION}.{name} needs torchvision, which nalln does not install "
            "(it does not import beside the CPU torch); nalln uses no object detection"
        )


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _ObjectDetectionStub(spec.name)
        module.__path__ = []  # a package, so that sub-imports fail with our message
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def _torchvision_available() -> bool:
    try:
        return importlib.util.find_spec("torchvision") is not None
    except (ImportError, ValueError):
        return False


class LavaCompatFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder that serves the two fixed modules and defers everything else."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == VAR_MODEL:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
                return spec
            loader = _PatchedSourceLoader(fullname, spec.origin)
            return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)
        if fullname == OBJECT_DETECTION and not _torchvision_available():
            return importlib.machinery.ModuleSpec(fullname, _StubLoader(), is_package=True)
        return None


_FINDER = LavaCompatFinder()


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(f, LavaCompatFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, LavaCompatFinder)]


def lava_installed() -> bool:
    try:
        return importlib.util.find_spec("lava") is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def _fork_start_method() -> Iterator[None]:
    """Lava sets the 'fork' start method at import; tolerate it being set to 'fork' already."""
    current = multiprocessing.get_start_method(allow_none=True)
    if current is None:
        yield
        return
    if current != "fork":
        raise NallnError(
            f"Lava needs the 'fork' multiprocessing start method, but this process already uses "
            f"{current!r}; run the Lava back-end in a fresh process (e.g. the `nalln` command)"
        )
    original = multiprocessing.set_start_method

    def _noop(method: str, force: bool = False) -> None:
        if method != "fork":
            original(method, force)

    multiprocessing.set_start_method = _noop
    try:
        yield
    finally:
        multiprocessing.set_start_method = original


def import_lava(*modules: str) -> list[types.ModuleType]:
    """Install the shim and import Lava's core plus ``modules``; clear error if Lava is absent."""
    if not lava_installed():
        raise NallnError(
            f"the Lava back-end needs lava-nc 0.10.0 and lava-dl 0.6.0; {INSTALL_HINT}"
        )
    install()
    # the module that calls set_start_method('fork') goes first, inside the guard
    names = (FORK_MODULE, "lava.magma.core.run_configs", *modules)
    with _fork_start_method():
        try:
            return [importlib.import_module(m) for m in names][2:]
        except ModuleNotFoundError as exc:
            raise NallnError(f"Lava is incomplete ({exc}); {INSTALL_HINT}") from None
