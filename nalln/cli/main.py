"""The ``nalln`` command: one sub-command group per module in this package.

User mistakes (:class:`NallnError`) and an environment that refuses a write (disk full,
permission denied, read-only file system) print one line and exit 2; Ctrl-C exits 130 and SIGTERM
(a scheduler or ``kill``) 143, each with one line that says how to continue; anything else is a
bug and keeps its traceback. Inputs and outputs a command declares are checked before it runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from nalln import __version__
from nalln.cli.common import check_paths, os_error_message
from nalln.cli.parallel import join_world, leave_world
from nalln.distributed.world import RendezvousError, report_and_wait
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up (temporary files, hints) runs."""


def _terminate_handler(main_pid: int):
    def handler(signum: int, frame: object) -> None:
        if os.getpid() != main_pid:
            # a forked worker (Lava runs one per process) keeps the default: die at once
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated

    return handler


def _install_sigterm():
    try:
        return signal.signal(signal.SIGTERM, _terminate_handler(os.getpid()))
    except ValueError:  # main() called from a thread other than the main one: leave it alone
        return None


def _peer_lost(exc: RuntimeError) -> bool:
    """A collective failed because another rank died (torchrun then stops this one too)."""
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, dist.DistError) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Gloo")
    )


def _speaks(world) -> bool:
    if world is not None:
        return world.main
    return os.environ.get("RANK", "0") in ("", "0")


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
    previous = _install_sigterm()
    world = None
    try:
        world = join_world(args)
        check_paths(args)
        code = args.func(args)
    except NallnError as exc:
        if _speaks(world) or isinstance(exc, RendezvousError):  # rank 0 speaks for all
            sys.stderr.write(f"nalln: error: {exc}\n")
            sys.stderr.flush()
        report_and_wait()
        return exc.exit_code
    except BrokenPipeError:
        return 141
    except OSError as exc:
        message = os_error_message(exc, getattr(args, "interrupt_hint", None))
        if message is None:
            raise
        if _speaks(world):
            sys.stderr.write(f"nalln: error: {message}\n")
        return NallnError.exit_code
    except RuntimeError as exc:
        if world is None or not world.distributed or not _peer_lost(exc):
            raise
        if world.main:
            hint = getattr(args, "interrupt_hint", None)
            sys.stderr.write(
                "nalln: error: another rank stopped, so this job cannot go on ("
                + str(exc).splitlines()[0][:100]
                + ")"
                + (f"; {hint}" if hint else "")
                + "\n"
            )
        return 1
    except KeyboardInterrupt as exc:
        if world is not None and not world.main:
            return 143 if isinstance(exc, Terminated) else 130
        hint = getattr(args, "interrupt_hint", None)
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        sys.stderr.write(f"nalln: {what}" + (f"; {hint}" if hint else "") + "\n")
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        leave_world()
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
