"""Helpers every command shares: tables, JSON output, progress switches, provenance tags."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nalln.ir.se_mode import SEMode
from nalln.textfmt import format_table

__all__ = [
    "add_calibration_flag",
    "add_conversion_flags",
    "add_graph_input_flags",
    "add_progress_flag",
    "checked_calibration",
    "format_table",
    "print_json",
    "show_progress",
    "synthetic_banner",
]


def print_json(obj: Any) -> None:
    from nalln.io import json_default

    json.dump(obj, sys.stdout, indent=2, default=json_default)
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


def add_conversion_flags(p: argparse.ArgumentParser, fixed_point_help: str) -> None:
    """``--se``, ``--fixed-point``, ``--data`` and ``--calibration``, shared by convert and
    simulate so that the two read the same way."""
    p.add_argument(
        "--se",
        default=SEMode.HYBRID,
        type=SEMode,
        choices=SEMode.deployable(),
        help="SE gates: folded static scales (NIR-native) or a side-car (default)",
    )
    p.add_argument("--fixed-point", action="store_true", help=fixed_point_help)
    p.add_argument("--data", help="data-set root (default: the one the run was trained on)")
    add_calibration_flag(p, "the fixed-point calibration")


def add_graph_input_flags(p: argparse.ArgumentParser) -> None:
    """``--inputs X.npz`` and ``--steps T`` for NIR graphs, shared by convert and simulate."""
    p.add_argument(
        "--inputs",
        metavar="X.npz",
        help="(NIR graph) inputs: x float32 [N, T, ...] (a value per step) or [N, ...] (held "
        "at every step), any channel count; optional y (integer labels) and classes",
    )
    p.add_argument(
        "--steps",
        type=int,
        metavar="T",
        help="time steps for a NIR graph that does not record T (per-step inputs give their own)",
    )


def checked_calibration(args: argparse.Namespace) -> int:
    from nalln.errors import NallnError

    if args.calibration < 1:
        raise NallnError("--calibration must be at least 1")
    return args.calibration


def show_progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def synthetic_banner(synthetic: bool) -> str:
    return "[SYNTHETIC DATA - pipeline check only, not clinical evidence]\n" if synthetic else ""
