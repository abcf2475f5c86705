"""Helpers every command shares: tables, JSON output, progress switches, provenance tags."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from nalln.ir.se_mode import SEMode
from nalln.textfmt import format_table

__all__ = [
    "add_calibration_flag",
    "add_conversion_flags",
    "add_graph_input_flags",
    "add_input",
    "add_json_flag",
    "add_output",
    "add_progress_flag",
    "check_output",
    "check_paths",
    "checked_calibration",
    "format_table",
    "json_or_banner",
    "os_error_message",
    "print_json",
    "show_progress",
    "synthetic_banner",
]


def print_json(obj: Any) -> None:
    from nalln.io import json_default

    json.dump(obj, sys.stdout, indent=2, default=json_default)
    sys.stdout.write("\n")


def add_json_flag(p: argparse.ArgumentParser, what: str = "the result") -> None:
    """``--json``: the command's result document on stdout and nothing else, for scripts."""
    as_json = "" if what.endswith(".json") else " as JSON"
    p.add_argument("--json", action="store_true", help=f"print {what}{as_json} to stdout")


def json_or_banner(
    args: argparse.Namespace, data: Any, synthetic: bool = False, synthetic_model: bool = False
) -> bool:
    """With ``--json`` print ``data`` and return True (the command is done); otherwise print the
    SYNTHETIC banner where it applies and return False, so that every command reads
    ``if json_or_banner(args, data, synthetic): return 0`` and none forgets the banner.
    ``synthetic``: the data; ``synthetic_model``: the model was trained on synthetic data."""
    if getattr(args, "json", False):
        print_json(data)
        return True
    print(synthetic_banner(synthetic, synthetic_model), end="")
    return False


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


def add_conversion_flags(
    p: argparse.ArgumentParser,
    fixed_point_help: str,
    se_modes: tuple[SEMode, ...] = SEMode.deployable(),
) -> None:
    """``--se``, ``--fixed-point``, ``--data`` and ``--calibration``, shared by convert and
    simulate so that the two read the same way."""
    onchip = (
        "; onchip: the gates computed by neuro-cores (a run fine-tuned with --se onchip, "
        "fixed point only)"
        if SEMode.ONCHIP in se_modes
        else ""
    )
    p.add_argument(
        "--se",
        default=SEMode.HYBRID,
        type=SEMode,
        choices=se_modes,
        help=f"SE gates: folded static scales (NIR-native) or a side-car (default){onchip}",
    )
    p.add_argument("--fixed-point", action="store_true", help=fixed_point_help)
    add_input(p, "--data", help="data-set root (default: the one the run was trained on)")
    add_calibration_flag(p, "the fixed-point calibration")


def add_graph_input_flags(p: argparse.ArgumentParser) -> None:
    """``--inputs X.npz`` and ``--steps T`` for NIR graphs, shared by convert and simulate."""
    add_input(
        p,
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


def add_semantics_flags(p: argparse.ArgumentParser) -> None:
    """``--reset``, ``--spikes``, ``--v-min``, ``--dt``: a NIR graph's semantics where its
    producer records none (nalln.conversion.semantics; docs/conversion.md)."""
    p.add_argument(
        "--reset",
        choices=("zero", "subtract", "subtract-undecayed"),
        help="(NIR graph) reset of LIF/IF/CubaLIF nodes that record none: zero (NIR, default), "
        "subtract (Sinabs, Norse), subtract-undecayed (snnTorch's default 'subtract')",
    )
    p.add_argument(
        "--spikes",
        choices=("single", "multi"),
        help="(NIR graph) spikes per step of nodes that record none: single (NIR, default) or "
        "multi (Sinabs's MultiSpike: floor(v / threshold))",
    )
    p.add_argument(
        "--v-min",
        type=float,
        metavar="V",
        help="(NIR graph) floor on the membrane after the reset of nodes that record none "
        "(Sinabs's min_v_mem; default none, as NIR)",
    )
    p.add_argument(
        "--dt",
        type=float,
        metavar="SECONDS",
        help="(NIR graph) time step of a graph that records none (else 1e-4 s, snnTorch's)",
    )


def semantics_choices(args: argparse.Namespace):
    """The checked ``--reset/--spikes/--v-min/--dt`` of ``args``."""
    from nalln.conversion.semantics import Choices

    return Choices.parse(args.reset, args.spikes, args.dt, args.v_min)


def checked_calibration(args: argparse.Namespace) -> int:
    from nalln.errors import NallnError

    if args.calibration < 1:
        raise NallnError("--calibration must be at least 1")
    return args.calibration


def show_progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def synthetic_banner(synthetic: bool, synthetic_model: bool = False) -> str:
    """The first line of a result: about the data, else about a model trained on synthetic data
    (real images are never called synthetic because the model was)."""
    if synthetic:
        return "[SYNTHETIC DATA - pipeline check only, not clinical evidence]\n"
    if synthetic_model:
        return "[MODEL TRAINED ON SYNTHETIC DATA - pipeline check only, not clinical evidence]\n"
    return ""


# --- paths a command reads and writes --------------------------------------------------------
#
# Every argument that names an existing input or an output is declared with add_input /
# add_output; main() calls check_paths() on the parsed arguments before the command runs, so a
# missing input or an unusable output ends in one line before anything is computed or written
# (issue 15). tests/faults/test_cli_contract.py walks the parser and holds every command to it.

PATH_ROLES = "path_roles"  # parser default: ((dest, role, label), ...)
OutputKind = Literal["folder", "file"]


def _declare(p: argparse.ArgumentParser, action: argparse.Action, role: str) -> None:
    if action.option_strings:
        label = action.option_strings[-1]
    else:
        label = str(action.metavar or action.dest).upper()
    roles = tuple(p.get_default(PATH_ROLES) or ())
    p.set_defaults(**{PATH_ROLES: (*roles, (action.dest, role, label))})


def add_input(p: argparse.ArgumentParser, *names: str, **kwargs: Any) -> argparse.Action:
    """An argument naming existing files or folders (one, several, or optional)."""
    action = p.add_argument(*names, **kwargs)
    _declare(p, action, "input")
    return action


def add_output(
    p: argparse.ArgumentParser, *names: str, kind: OutputKind, **kwargs: Any
) -> argparse.Action:
    """An argument naming a folder or file the command creates (or replaces)."""
    action = p.add_argument(*names, **kwargs)
    _declare(p, action, f"output-{kind}")
    return action


def _values(value: Any) -> Iterable[str]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return (str(value),)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _not_writable(folder: Path) -> str | None:
    """Why nothing can be created in ``folder`` (None: it can)."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except OSError:  # pragma: no cover - statvfs of an existing folder does not fail on Linux
        pass
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    return None


def check_output(path: str | os.PathLike, kind: OutputKind, label: str = "--out") -> None:
    """Raise a one-line NallnError unless ``path`` can become the output ``kind`` names."""
    from nalln.errors import NallnError

    target = Path(path)
    if target.exists():
        if kind == "folder" and not target.is_dir():
            raise NallnError(
                f"{label} {target} is an existing file, not a folder; give a folder path "
                "(it is created if missing)"
            )
        if kind == "file" and target.is_dir():
            raise NallnError(f"{label} {target} is a folder; give the path of a file to write")
    where = _nearest_existing(target if kind == "folder" else target.parent)
    if not where.is_dir():
        raise NallnError(
            f"{label} {target} cannot be created: {where} is a file, not a folder; "
            "choose another path"
        )
    why = _not_writable(where)
    if why:
        raise NallnError(
            f"{label} {target} cannot be written: {why} ({where}); choose a path you can write to"
        )


def check_paths(args: argparse.Namespace) -> None:
    """Check the inputs and outputs the command declared, before it runs (see add_input)."""
    from nalln.errors import NallnError

    for dest, role, label in getattr(args, PATH_ROLES, ()):
        for value in _values(getattr(args, dest, None)):
            if role == "input":
                if not Path(value).expanduser().exists():
                    raise NallnError(f"{label} {value} does not exist; check the path")
            else:
                check_output(value, "folder" if role == "output-folder" else "file", label)


# errno values that mean "the environment refused", not "nalln has a bug": one line, no traceback
WRITE_ERRNOS = {
    errno.ENOSPC: "free some space or choose another --out",
    errno.EDQUOT: "free some space or choose another --out",
    errno.EFBIG: "the file is larger than this file system or a limit allows; choose another --out",
    errno.EROFS: "choose a path you can write to",
    errno.EACCES: "choose a path you can write to, or fix its permissions",
    errno.EPERM: "choose a path you can write to, or fix its permissions",
}


def os_error_message(exc: OSError, hint: str | None = None) -> str | None:
    """The one-line message for an OS error while writing (None: not one of those, a bug)."""
    advice = WRITE_ERRNOS.get(exc.errno or 0)
    if advice is None:
        return None
    where = f" {exc.filename}" if exc.filename else ""
    verb = "cannot write" if getattr(exc, "nalln_writing", False) else "cannot access"
    return f"{verb}{where}: {exc.strerror or os.strerror(exc.errno)}; {advice}" + (
        f"; {hint}" if hint else ""
    )
