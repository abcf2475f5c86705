"""The analysis commands (robustness, gradcam, ablate, quantize, report), one module each."""

from __future__ import annotations

import argparse
import importlib

MODULES = (
    "nalln.cli.robustness",
    "nalln.cli.gradcam",
    "nalln.cli.ablate",
    "nalln.cli.quantize",
    "nalln.cli.report",
)


def register(sub: argparse._SubParsersAction) -> None:
    for name in MODULES:
        importlib.import_module(name).register(sub)
