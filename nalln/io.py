"""Crash-safe file writing: a reader never sees a half-written file.

Every output goes to a temporary file in the same folder, is flushed and fsynced, then renamed
over the target (rename is atomic on POSIX), and the folder is fsynced so the rename survives a
power cut.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


TEST_KILL_VAR = "NALLN_TEST_KILL"
_test_kill_counts: dict[str, int] = {}


def _test_kill_point(target: Path, stage: str, fh: IO[Any] | None = None) -> None:
    """Fault-injection hook for tests/faults; does nothing unless ``NALLN_TEST_KILL`` is set.

    ``NALLN_TEST_KILL=NAME:N:STAGE`` SIGKILLs this process at the N-th atomic write of a file
    called NAME, at STAGE: ``partial`` (half the bytes in the temporary file), ``written``
    (temporary file complete, not yet renamed) or ``renamed`` (target replaced). A real kill,
    at a point an outside killer could only hit by chance (docs/reliability.md).
    """
    spec = os.environ.get(TEST_KILL_VAR)
    if not spec:
        return
    name, n, at = spec.rsplit(":", 2)
    if name != target.name or at != stage:
        return
    _test_kill_counts[name] = _test_kill_counts.get(name, 0) + 1
    if _test_kill_counts[name] == int(n):
        if fh is not None:
            fh.flush()
            fh.truncate(fh.tell() // 2)
            fh.flush()
            os.fsync(fh.fileno())
        os.kill(os.getpid(), signal.SIGKILL)


def stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Temporary files :func:`atomic_open` leaves behind when its process is killed."""
    return sorted(p for p in Path(folder).glob(".*.tmp") if p.is_file())


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path``; on success rename it over ``path``."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        if exc.filename is None or Path(exc.filename).name.startswith(f".{target.name}."):
            exc.filename = str(target)  # the user knows the target, not our temporary name
        exc.nalln_writing = True  # type: ignore[attr-defined]  # the CLI says "cannot write"
        raise
    binary = "b" in mode
    os.chmod(tmp, _FILE_MODE)  # mkstemp creates 0600; outputs follow the umask like open() would
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as fh:
            yield fh
            fh.flush()
            _test_kill_point(target, "partial", fh)
            os.fsync(fh.fileno())
        _test_kill_point(target, "written")
        os.replace(tmp, target)
        _test_kill_point(target, "renamed")
        _fsync_dir(target.parent)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if exc.filename in (None, tmp):  # a failed write() names no file: name the target
            exc.filename = str(target)
        exc.nalln_writing = True  # type: ignore[attr-defined]
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class StagedFolder:
    """A hidden staging folder beside ``final``: a command writes everything there and
    :meth:`publish` moves the files into ``final`` only when all of them were made, so a
    failure leaves nothing half-made behind. Use through :func:`staged_folder`."""

    def __init__(self, final: Path, path: Path) -> None:
        self.final = final
        self.path = path

    def publish(self, names: Iterable[str | os.PathLike]) -> dict[str, Path]:
        """Move each file ``name`` (relative to the staging folder) to ``final / name``."""
        self.final.mkdir(exist_ok=True)
        moved = {}
        for name in names:
            dst = self.final / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path / name, dst)
            moved[str(name)] = dst
        return moved

    def relocate(self, obj: Any) -> Any:
        """``obj`` (JSON-ready) with every staging path replaced by the final one."""
        text = json.dumps(obj, default=json_default).replace(str(self.path), str(self.final))
        return json.loads(text)


@contextlib.contextmanager
def staged_folder(final: str | os.PathLike) -> Iterator[StagedFolder]:
    """A :class:`StagedFolder` for ``final``; the staging folder is removed on leaving."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield StagedFolder(final, stage)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def write_csv(
    path: str | os.PathLike, rows: Iterable[Sequence[Any]], header: Sequence[str]
) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


def write_frame(path: str | os.PathLike, frame: Any) -> Path:
    """A pandas DataFrame as CSV (no index column), written atomically like every output."""
    return write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return write_bytes(path, buf.getvalue())


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
