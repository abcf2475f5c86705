"""Fuzz the hardware-target parser (nalln.hardware_targets): target files come from users'
folders and from anyone who shares one, so every file must load or fail with TargetFileError.

Three generators: random bytes, mutated built-in target files (text edits that keep most of the
TOML valid), and parsed-TOML trees of any shape handed straight to the validator.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nalln.errors import NallnError
from nalln.hardware_targets import (
    BUILTIN_DIR,
    KNOWN_CONSTANTS,
    Target,
    TargetFileError,
    load_target_file,
)
from nalln.hardware_targets.registry import TargetRegistry
from nalln.hardware_targets.schema import parse_target

from .helpers import fuzz_settings, works_or_clean_error

BUILTIN_TEXTS = [p.read_text(encoding="utf-8") for p in sorted(BUILTIN_DIR.glob("*.toml"))]
TOKENS = [
    '"',
    "'",
    "[",
    "]",
    "{",
    "}",
    "=",
    ",",
    ".",
    "\n",
    "#",
    "1e999",
    "-1",
    "nan",
    "inf",
    "0x",
    "true",
    "[[constants]]",
    '"""',
    "\\u0000",
    "1979-05-27T07:32:00Z",
    "9" * 30,
]


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nalln-fuzz-target-") as d:
        yield Path(d)


def _load(scratch: Path, data: bytes) -> None:
    path = scratch / "target.toml"
    path.write_bytes(data)
    out = works_or_clean_error(load_target_file, path)
    assert isinstance(out, TargetFileError | Target), out


@st.composite
def mutated_targets(draw: st.DrawFn) -> bytes:
    text = draw(st.sampled_from(BUILTIN_TEXTS))
    for _ in range(draw(st.integers(1, 5))):
        pos = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace_value", "swap_line"]))
        if kind == "insert":
            text = text[:pos] + draw(st.sampled_from(TOKENS)) + text[pos:]
        elif kind == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 20)) :]
        elif kind == "replace_value":  # change what follows the next "= "
            i = text.find("= ", pos)
            if i >= 0:
                end = text.find("\n", i)
                end = len(text) if end < 0 else end
                value = draw(
                    st.sampled_from(
                        [
                            '"x"',
                            "-3",
                            "1e400",
                            "[]",
                            "{}",
                            "true",
                            '""',
                            "nan",
                            "2024-01-01",
                            "[1, 2]",
                            "{value = 1}",
                            "0",
                        ]
                    )
                )
                text = text[: i + 2] + value + text[end:]
        else:
            lines = text.splitlines(keepends=True)
            if len(lines) > 1:
                a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
                lines[a], lines[b] = lines[b], lines[a]
                text = "".join(lines)
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


@fuzz_settings(700)
@given(data=mutated_targets())
def test_mutated_target_files_load_or_fail_cleanly(scratch: Path, data: bytes) -> None:
    _load(scratch, data)


@fuzz_settings(200)
@given(data=st.binary(max_size=1024))
def test_random_bytes_fail_cleanly(scratch: Path, data: bytes) -> None:
    _load(scratch, data)


toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(),
    st.text(max_size=10),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 1, 1)),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
constant_tables = st.fixed_dictionaries(
    {},
    optional={
        "value": st.one_of(st.floats(), st.integers(-(2**70), 2**70), toml_values),
        "unit": st.one_of(
            st.sampled_from(["pJ", "nJ", "W", "mW", "count", "TFLOPS", "?"]), toml_values
        ),
        "status": st.one_of(
            st.sampled_from(["published", "derived", "estimated", "x"]), toml_values
        ),
        "source": st.one_of(st.text(max_size=12), toml_values),
        "note": toml_values,
        "extra": toml_values,
    },
)
target_trees = st.fixed_dictionaries(
    {},
    optional={
        "schema": st.one_of(st.just(1), toml_values),
        "id": st.one_of(st.sampled_from(["chip-1", "bad id", "", "loihi"]), toml_values),
        "name": st.one_of(st.text(max_size=10), toml_values),
        "kind": st.one_of(
            st.sampled_from(["neuromorphic", "gpu", "cpu", "asic", "toaster"]), toml_values
        ),
        "description": toml_values,
        "energy_proxy": st.one_of(st.sampled_from(["loihi", "gpu-t4", "nope"]), toml_values),
        "notes": st.one_of(st.lists(st.text(max_size=6), max_size=3), toml_values),
        "constants": st.one_of(
            st.dictionaries(
                st.one_of(st.sampled_from(sorted(KNOWN_CONSTANTS)), st.text(max_size=6)),
                st.one_of(constant_tables, toml_values),
                max_size=3,
            ),
            toml_values,
        ),
        "bogus": toml_values,
    },
)


@fuzz_settings(500)
@given(tree=target_trees)
def test_any_parsed_toml_tree_validates_or_fails_cleanly(tree: dict) -> None:
    out = works_or_clean_error(parse_target, tree, "", Path("fuzz.toml"))
    if isinstance(out, Target):  # what validated must be usable: a registry takes it
        others = {"loihi": load_target_file(BUILTIN_DIR / "loihi.toml", builtin=True)}
        reg = works_or_clean_error(TargetRegistry, {**others, out.id: out})
        assert isinstance(reg, TargetRegistry | NallnError)
        for key in out.constants:
            assert out.value(key) >= 0
