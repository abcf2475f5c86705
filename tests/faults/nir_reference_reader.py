"""What a NIR loader must do with files from strangers: the executable checklist of
docs/reliability.md ("NIR files"), used by the NIR fault tests and run as a worker process.

``nir.read`` (nir 1.0.8) only calls h5py and builds dataclasses from plain arrays: it never
unpickles. But HDF5 itself can (1) point a dataset's bytes at any local file (external storage),
(2) link to other files or back to a parent group, and (3) make libhdf5 1.14.4 loop forever on a
corrupted global heap (one changed byte in a string's length). So a loader must refuse (1) and
(2) before ``nir.read`` runs, turn every exception into a one-line error, and for (3) read a file
it did not write in a child process with a time limit. ``python nir_reference_reader.py`` is such
a child (paths on stdin, one outcome line per path on stdout; see test_fuzz_nir.NirWorker).
nalln's own reader (nalln.conversion.nir_io.read_graph with nalln/conversion/nir_probe.py)
implements the same checklist.
"""

from __future__ import annotations

import os
import sys

import h5py
import nir

from nalln.errors import NallnError

MAX_ELEMENTS = 50_000_000  # 200 MB of float32: far above any NeurALLNet graph (337k weights)
MAX_DEPTH = 16  # nir.write nests node/nodes/NAME/metadata/...; deeper means a link cycle


def _check_tree(group: h5py.Group, where: str, depth: int = 0) -> None:
    for name in group:
        link = group.get(name, getlink=True)
        path = f"{where}/{name}"
        if isinstance(link, h5py.ExternalLink):
            raise NallnError(f"{path} links to another file ({link.filename}); refused")
        if isinstance(link, h5py.SoftLink):
            raise NallnError(f"{path} is a soft link ({link.path}); NIR files have none")
        item = group[name]
        if isinstance(item, h5py.Group):
            if depth >= MAX_DEPTH:  # e.g. a hard link back to a parent group
                raise NallnError(f"{path} nests deeper than {MAX_DEPTH} (a link cycle?); refused")
            _check_tree(item, path, depth + 1)
        elif isinstance(item, h5py.Dataset):
            if item.external or item.is_virtual:
                raise NallnError(f"{path} stores its data in another file; refused")
            if item.size > MAX_ELEMENTS:
                raise NallnError(f"{path} declares {item.size:,} elements; refused")


def read_nir(path: str) -> nir.NIRGraph:
    """Checked ``nir.read``; every failure is one NallnError line."""
    try:
        if not h5py.is_hdf5(path):
            raise NallnError(f"{path} is not an HDF5 (NIR) file")
        with h5py.File(path, "r") as f:
            if not isinstance(f.get("node", getlink=True), h5py.HardLink):
                raise NallnError(f"{path} has no 'node' group; not a NIR graph")
            _check_tree(f, "")
        graph = nir.read(path, type_check=False)
    except NallnError:
        raise
    except (
        ValueError,
        KeyError,
        TypeError,
        OSError,
        AttributeError,
        IndexError,
        AssertionError,
        RecursionError,
        ArithmeticError,
        RuntimeError,
        UnicodeDecodeError,
        MemoryError,
    ) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise NallnError(
            f"{path} is not a readable NIR graph ({type(exc).__name__}: {msg})"
        ) from None
    if not isinstance(graph, nir.NIRGraph):
        raise NallnError(f"{path} holds a single {type(graph).__name__}, not a NIR graph")
    return graph


def _reader():
    """``NALLN_NIR_READER=nalln`` serves nalln.conversion's reader instead (to measure it)."""
    if os.environ.get("NALLN_NIR_READER") == "nalln":
        from nalln.conversion.nir_io import read_graph

        return read_graph
    return read_nir


def _serve() -> None:
    """Worker loop: a path per stdin line -> ``ok`` | ``clean MSG`` | ``unexpected TYPE: MSG``."""
    read = _reader()
    sys.stdout.write("ready\n")  # imports done: the caller's time limit covers reads only
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            read(line.rstrip("\n"))
            out = "ok"
        except NallnError as exc:
            out = "clean " + str(exc).replace("\n", "\\n")
        except BaseException as exc:  # the test fails on these
            out = f"unexpected {type(exc).__name__}: {exc}".replace("\n", "\\n")
        sys.stdout.write(out + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
