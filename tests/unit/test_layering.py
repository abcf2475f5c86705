"""The import rules of docs/architecture.md ("Packages and layers"), checked on the source.

Each package of ``nalln`` sits in one layer; a module may import its own layer and the layers
below it, never one above (imports inside functions count too). No private name (``_x``)
crosses a package boundary. The root package ``nalln`` is the public facade: anything may read
its ``__version__``, nothing inside imports it otherwise.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nalln

ROOT = Path(nalln.__file__).parent

LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(names.split())
    for names in (
        "errors io textfmt run_meta provenance distributed",  # base: no nalln imports but these
        "config hardware_targets",  # settings and cited chip constants
        "data",
        "models",
        "ir",  # the deployment plan and its float reference
        "loihi",  # Loihi 2 fixed point: a leaf below training, conversion and runs
        "checkpoint runs run_data inference",
        "predict evaluation",
        "training",
        "conversion",
        "energy",
        "deploy",  # fine-tuning onto the chip's grid: training + conversion
        "analysis",
        "demo cli __main__",
    )
)
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "nalln"


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names) for every ``nalln`` import in ``path``."""
    module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                if path.name == "__init__.py":
                    base = module.split(".")[: len(module.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "nalln" or target.startswith("nalln."):
                out.append((node.lineno, target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "nalln" or a.name.startswith("nalln."):
                    out.append((node.lineno, a.name, []))
    return out


SOURCES = sorted(p for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT)


def _own(path: Path) -> str:
    return _package(".".join(path.relative_to(ROOT.parent).with_suffix("").parts))


def test_every_package_has_a_layer() -> None:
    packages = {_own(p) for p in SOURCES}
    assert packages <= set(LAYER_OF), f"packages without a layer: {packages - set(LAYER_OF)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down_and_keep_private_names_inside(path: Path) -> None:
    own = _own(path)
    bad = []
    for line, target, names in _imports(path):
        pkg = _package(target)
        if pkg == "nalln":
            if any(n != "__version__" for n in names) or not names:
                bad.append(f"line {line}: imports the facade `nalln` ({names})")
            continue
        if LAYER_OF[pkg] > LAYER_OF[own]:
            bad.append(
                f"line {line}: {own} (layer {LAYER_OF[own]}) imports {target} (layer "
                f"{LAYER_OF[pkg]})"
            )
        if pkg != own:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                bad.append(f"line {line}: private {private} from {target}")
    assert not bad, "\n".join(bad)


def test_loihi_is_a_leaf_of_training_conversion_and_runs() -> None:
    """The issue's rule in words: loihi imports none of the packages that use it."""
    users = {"training", "conversion", "runs", "run_data", "deploy", "checkpoint"}
    for path in (ROOT / "loihi").rglob("*.py"):
        for line, target, _ in _imports(path):
            assert _package(target) not in users, f"{path.name}:{line} imports {target}"
