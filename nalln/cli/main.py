"""The ``nalln`` command: one sub-command group per module in this package.

User mistakes (:class:`NallnError`) print one line and exit 2; Ctrl-C exits 130; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from nalln import __version__
from nalln.errors import NallnError

# Each module defines register(subparsers); the order is the order in `nalln --help`.
COMMAND_MODULES = (
    "nalln.cli.data",
    "nalln.cli.model",
    "nalln.cli.train",
    "nalln.cli.finetune",
    "nalln.cli.evaluate",
    "nalln.cli.predict",
    "nalln.cli.convert",
    "nalln.cli.simulate",
    "nalln.cli.profile",
    "nalln.cli.demo",
    "nalln.cli.energy",
    "nalln.cli.hardware",
    "nalln.cli.analysis",
)


class _OneLineWarnings(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"nalln: {record.levelname.lower()}: {record.getMessage()}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nalln",
        description="NeurALLNet: train, evaluate and deploy a spiking network for ALL subtypes.",
    )
    parser.add_argument("--version", action="version", version=f"nalln {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, handlers=[_OneLineWarnings()], force=True)
    os.environ.setdefault("KMP_WARNINGS", "0")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except NallnError as exc:
        sys.stderr.write(f"nalln: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        hint = getattr(args, "interrupt_hint", None)
        sys.stderr.write("nalln: interrupted" + (f"; {hint}" if hint else "") + "\n")
        return 130
    except BrokenPipeError:
        return 141
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
