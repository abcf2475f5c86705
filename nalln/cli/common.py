"""Helpers every command shares: tables, JSON output, progress switches, provenance tags."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nalln.textfmt import format_table

__all__ = [
    "add_calibration_flag",
    "add_progress_flag",
    "format_table",
    "print_json",
    "show_progress",
    "synthetic_banner",
]


def print_json(obj: Any) -> None:
    from nalln.io import _json_default

    json.dump(obj, sys.stdout, indent=2, default=_json_default)
    sys.stdout.write("\n")


def add_progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def add_calibration_flag(p: argparse.ArgumentParser, what: str) -> None:
    """``--calibration N`` of the fixed-point commands; ``what`` says what the images choose."""
    p.add_argument(
        "--calibration",
        type=int,
        default=64,
        metavar="N",
        help=f"training images for {what} (default 64)",
    )


def show_progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def synthetic_banner(synthetic: bool) -> str:
    return "[SYNTHETIC DATA - pipeline check only, not clinical evidence]\n" if synthetic else ""
