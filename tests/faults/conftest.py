"""Fixtures of the fault tests (helpers live in helpers.py)."""

from __future__ import annotations

import faulthandler
import sys
from collections.abc import Iterator

import pytest

HANG_LIMIT_S = 300


@pytest.fixture(autouse=True)
def hang_guard() -> Iterator[None]:
    """A test stuck (even inside C code) for 5 minutes dumps every thread's stack and exits."""
    faulthandler.dump_traceback_later(HANG_LIMIT_S, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()
