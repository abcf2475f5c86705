"""Where targets come from: the built-in files, the user's folders, or a path.

Search order (a later file with the same id replaces an earlier one, with a warning):

1. ``nalln/hardware_targets/data/*.toml`` (shipped, every constant cited);
2. ``$XDG_CONFIG_HOME/nalln/targets/*.toml`` (default ``~/.config/nalln/targets``);
3. every folder in ``$NALLN_TARGETS_DIR`` (``os.pathsep``-separated);
4. folders given on the command line (``--targets-dir``).

A target named by a path (``--targets ./my_chip.toml``) is read from that file.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

from nalln.errors import NallnError
from nalln.hardware_targets.schema import Target, TargetFileError, parse_target

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "data"
ENV_VAR = "NALLN_TARGETS_DIR"


def user_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    """User target folders in search order (they need not exist)."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    dirs = [Path(config_home) / "nalln" / "targets"]
    env = os.environ.get(ENV_VAR, "")
    dirs += [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    dirs += [Path(p).expanduser() for p in extra]
    return dirs


def load_target_file(path: str | Path, builtin: bool = False) -> Target:
    """Read and validate one target file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise TargetFileError(f"target file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetFileError(f"cannot read target file {p}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TargetFileError(f"{p}: not valid TOML: {exc}") from None
    return parse_target(data, text, p, builtin=builtin)


class TargetRegistry:
    """Every known target by id, with their proxies checked."""

    def __init__(self, targets: dict[str, Target]) -> None:
        self.targets = dict(sorted(targets.items()))
        for t in self.targets.values():
            self._check_proxy(t)

    def _check_proxy(self, t: Target) -> None:
        if t.energy_proxy is None:
            return
        proxy = self.targets.get(t.energy_proxy)
        if proxy is None:
            raise TargetFileError(
                f"{t.path}: energy_proxy {t.energy_proxy!r} is not a known target; known: "
                f"{', '.join(self.targets)}"
            )
        if proxy.kind != t.kind or proxy.energy_proxy is not None:
            raise TargetFileError(
                f"{t.path}: energy_proxy {proxy.id!r} must be a {t.kind} target with its own "
                "energy constants"
            )

    @property
    def ids(self) -> list[str]:
        return list(self.targets)

    def get(self, spec: str) -> Target:
        """A target by id, or by path to a ``.toml`` file."""
        name = spec.strip()
        if name in self.targets:
            return self.targets[name]
        if name.endswith(".toml") or os.sep in name or "/" in name:
            t = load_target_file(name)
            if t.energy_proxy is not None:
                self._check_proxy(t)
            return t
        raise NallnError(
            f"unknown target {name!r}; known targets: {', '.join(self.ids)} "
            "(or pass the path of a target .toml file; see `nalln hardware list`)"
        )

    def resolve(self, specs: Sequence[str] | str) -> list[Target]:
        if isinstance(specs, str):
            specs = [s for s in specs.split(",") if s.strip()]
        if not specs:
            raise NallnError("no targets given; pass e.g. --targets loihi,gpu-t4")
        out: list[Target] = []
        for s in specs:
            t = self.get(s)
            if t.id not in {o.id for o in out}:
                out.append(t)
        return out

    def energy_source(self, t: Target) -> Target:
        """The target whose energy constants ``t`` uses (itself unless it has a proxy)."""
        return self.targets[t.energy_proxy] if t.energy_proxy else t


def load_registry(extra_dirs: Iterable[str | Path] = ()) -> TargetRegistry:
    """Built-in targets plus every ``*.toml`` in the user folders."""
    targets: dict[str, Target] = {}
    for f in sorted(BUILTIN_DIR.glob("*.toml")):
        t = load_target_file(f, builtin=True)
        targets[t.id] = t
    for d in user_dirs(extra_dirs):
        if not d.is_dir():
            if d in [Path(p).expanduser() for p in extra_dirs]:
                raise NallnError(f"targets folder {d} does not exist")
            continue
        for f in sorted(d.glob("*.toml")):
            t = load_target_file(f)
            if t.id in targets:
                log.warning(
                    "target %s from %s replaces the one from %s", t.id, f, targets[t.id].path
                )
            targets[t.id] = t
    return TargetRegistry(targets)
