"""The CLI contract (issue 15), for every command and sub-command the parser has: the parser is
walked, so a new command is held to it without editing this file.

* ``--help`` exits 0;
* a missing input, an ``--out`` that is an existing file (a folder where a file is written) and
  an ``--out`` that cannot be written each end in one ``nalln: error:`` line, exit 2, with
  nothing written and nothing printed on stdout: the paths are checked before the command runs.

The commands run in-process through :func:`nalln.cli.main.main` (no torch import per case).
"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nalln.cli.common import PATH_ROLES
from nalln.cli.main import build_parser, main

from .helpers import assert_clean_error, run_cli


def _leaves(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _leaves(sub, (*prefix, name))


LEAVES = dict(_leaves(build_parser()))


def _roles(parser: argparse.ArgumentParser) -> list[tuple[str, str, str]]:
    return list(parser.get_default(PATH_ROLES) or ())


INPUT_CASES = [
    (cmd, dest) for cmd, p in LEAVES.items() for dest, role, _ in _roles(p) if role == "input"
]
OUTPUT_CASES = [
    (cmd, dest, role)
    for cmd, p in LEAVES.items()
    for dest, role, _ in _roles(p)
    if role.startswith("output")
]


def _ids(cases: list[tuple]) -> list[str]:
    return [" ".join(c[0]) + f" [{c[1]}]" for c in cases]


@pytest.mark.parametrize("cmd", list(LEAVES), ids=[" ".join(c) for c in LEAVES])
def test_help_exits_0(cmd: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*cmd, "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: nalln {' '.join(cmd)}")


# Arguments named like these hold paths by convention; each must be declared with
# add_input/add_output so that main() checks it before the command runs.
PATH_NAMES = {"out", "run", "root", "data", "images", "files", "splits", "config", "external"}


@pytest.mark.parametrize("cmd", list(LEAVES), ids=[" ".join(c) for c in LEAVES])
def test_every_path_argument_is_declared(cmd: tuple[str, ...]) -> None:
    parser = LEAVES[cmd]
    declared = {dest for dest, _, _ in _roles(parser)}
    named = {a.dest for a in parser._actions if a.dest in PATH_NAMES}
    assert named <= declared, f"nalln {' '.join(cmd)}: declare {named - declared} as paths"


def test_the_contract_covers_every_command_that_reads_or_writes() -> None:
    """A guard against a walk that silently finds nothing."""
    with_inputs = {c for c, _ in INPUT_CASES}
    with_outputs = {c for c, _, _ in OUTPUT_CASES}
    assert ("train",) in with_inputs & with_outputs
    assert ("data", "synth") in with_outputs and ("energy", "report") in with_outputs
    assert len(with_outputs) >= 15 and len(with_inputs) >= 17


@pytest.fixture(scope="module")
def inputs(synth_root: Path, tiny_run: Path) -> dict[str, Path]:
    """Existing paths for the inputs a case does not test (only their existence is needed)."""
    image = sorted((synth_root / "Original" / "Benign").iterdir())[0]
    return {"run": tiny_run, "images": image, "files": image, "default": synth_root}


def _argv(
    cmd: tuple[str, ...], values: dict[str, str], inputs: dict[str, Path], tmp: Path
) -> list[str]:
    """``cmd`` with every required argument filled: ``values`` for the ones under test."""
    parser = LEAVES[cmd]
    roles = {dest: role for dest, role, _ in _roles(parser)}
    argv = list(cmd)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        positional = not action.option_strings
        needed = action.required or (positional and action.nargs not in ("?", "*"))
        if action.dest in values:
            value = values[action.dest]
        elif not needed:
            continue
        elif roles.get(action.dest) == "input":
            value = str(inputs.get(action.dest, inputs["default"]))
        elif roles.get(action.dest, "").startswith("output"):
            value = str(tmp / f"fresh-{action.dest}")
        elif action.choices:
            value = str(next(iter(action.choices)))
        else:
            value = "loihi2"  # the one required non-path argument (hardware fit --target)
        argv += [action.option_strings[0], value] if not positional else [value]
    return argv


def _snapshot(*folders: Path) -> dict[str, float]:
    return {
        str(p): p.stat().st_mtime_ns
        for folder in folders
        for p in folder.rglob("*")
        if p.is_file() or p.is_dir()
    }


def _refused(
    argv: list[str], capsys: pytest.CaptureFixture[str], watched: tuple[Path, ...], needle: str
) -> str:
    before = _snapshot(*watched)
    code = main(argv)
    captured = capsys.readouterr()
    proc = subprocess.CompletedProcess(argv, code, captured.out, captured.err)
    line = assert_clean_error(proc, needle)
    assert captured.out == "", "computed or printed before refusing"
    assert _snapshot(*watched) == before, "something was written"
    return line


@pytest.mark.parametrize(("cmd", "dest"), INPUT_CASES, ids=_ids(INPUT_CASES))
def test_a_missing_input_is_one_line_before_anything_runs(
    cmd: tuple[str, ...],
    dest: str,
    inputs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "no-such-thing"
    argv = _argv(cmd, {dest: str(missing)}, inputs, tmp_path)
    line = _refused(argv, capsys, (tmp_path, inputs["run"]), "does not exist")
    assert str(missing) in line


@pytest.mark.parametrize(("cmd", "dest", "role"), OUTPUT_CASES, ids=_ids(OUTPUT_CASES))
def test_an_out_of_the_wrong_kind_is_one_line_before_anything_runs(
    cmd: tuple[str, ...],
    dest: str,
    role: str,
    inputs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An existing file where a folder is made; an existing folder where a file is written."""
    wrong = tmp_path / "taken"
    if role == "output-folder":
        wrong.write_text("the user's file\n")
        needle = "is an existing file"
    else:
        wrong.mkdir()
        needle = "is a folder"
    argv = _argv(cmd, {dest: str(wrong)}, inputs, tmp_path)
    line = _refused(argv, capsys, (tmp_path, inputs["run"]), needle)
    assert str(wrong) in line
    if role == "output-folder":
        assert wrong.read_text() == "the user's file\n"


@pytest.fixture(scope="module")
def read_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder nothing can be written to: a read-only tmpfs as root, mode 0555 otherwise."""
    folder = tmp_path_factory.mktemp("read-only")
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("root without mount(8): no folder that root cannot write to")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize(("cmd", "dest", "role"), OUTPUT_CASES, ids=_ids(OUTPUT_CASES))
def test_an_unwritable_out_is_one_line_before_anything_runs(
    cmd: tuple[str, ...],
    dest: str,
    role: str,
    inputs: dict[str, Path],
    read_only: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = read_only / "new" / ("out.csv" if role == "output-file" else "out")
    argv = _argv(cmd, {dest: str(target)}, inputs, tmp_path)
    line = _refused(argv, capsys, (tmp_path, inputs["run"]), "cannot be written")
    assert str(target) in line
    assert not any(read_only.iterdir())


def test_through_the_real_command_line(tmp_path: Path) -> None:
    """The same in a fresh ``python -m nalln`` process: exit code, stderr, no traceback."""
    taken = tmp_path / "taken.txt"
    taken.write_text("x")
    proc = run_cli("data", "synth", taken, "--n-per-class", "1")
    assert_clean_error(proc, "is an existing file")
    assert taken.read_text() == "x"
    proc = run_cli("robustness", "--help")
    assert proc.returncode == 0 and "--brightness" in proc.stdout, proc.stderr
    assert "25% darker" in proc.stdout
