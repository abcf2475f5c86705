"""Check NIR files from strangers in a throw-away process before nalln reads them.

``nir.read`` itself never runs code from a file (it builds dataclasses from plain arrays), but the
HDF5 format underneath can do three things a graph from another tool must not (measured on
nir 1.0.8 / h5py 3.12 / HDF5 1.14.4, docs/reliability.md "NIR files"):

* point a dataset's bytes at any local file (external storage, virtual datasets) or follow links
  into other files - a ``.nir`` file could pull e.g. a private key in as weights;
* declare arrays far larger than the file (a few KB can declare 80 GB, allocated on read);
* make libhdf5 loop forever: one changed byte in the global heap hangs every string read.

:func:`check` refuses the first two by walking the tree without reading data, then does a trial
``nir.read``. Run as a script (``python -P nir_probe.py MAX_BYTES FILE...``, one ``ok`` or
``refused MESSAGE`` line per file) it is the child that :func:`nalln.conversion.nir_io.read_graph`
gives a time limit: a hang or a crash of libhdf5 then costs a killed child, not the caller. It
imports only h5py and nir (not torch, not nalln), so the child starts in about 0.3 s.
"""

from __future__ import annotations

import sys

import h5py
import nir

MAX_DEPTH = 16  # nir.write nests node/nodes/NAME/metadata: deeper means a hostile file


class Refused(Exception):
    """The file is not one nalln will read; the message says why, in one line."""


def _walk(group: h5py.Group, where: str, max_bytes: int, seen: set, depth: int = 0) -> int:
    """Declared bytes of every dataset below ``group``; refuses what nir.write never makes."""
    total = 0
    for name in group:
        path = f"{where}/{name}"
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise Refused(f"{path} is a link into another file ({link.filename}); refused")
        if not isinstance(link, h5py.HardLink):
            target = getattr(link, "path", "")
            raise Refused(f"{path} is a {type(link).__name__} {target}; NIR files have none")
        item = group[name]
        if item.id in seen:  # a second hard link to one object: a cycle or a fan-out bomb
            raise Refused(f"{path} links back to an object seen before (a link cycle?); refused")
        seen.add(item.id)
        if isinstance(item, h5py.Group):
            if depth >= MAX_DEPTH:
                raise Refused(f"{path} nests deeper than {MAX_DEPTH} groups; refused")
            total += _walk(item, path, max_bytes, seen, depth + 1)
        elif isinstance(item, h5py.Dataset):
            if item.external or item.is_virtual:
                raise Refused(f"{path} stores its data in another file; refused")
            size = item.size * item.dtype.itemsize
            total += size
            if total > max_bytes:
                raise Refused(
                    f"{path} declares {item.size:,} elements ({size:,} bytes); the file's arrays "
                    f"would take {total:,} bytes, over the limit of {max_bytes:,} bytes "
                    "(NALLN_NIR_MAX_BYTES); refused"
                )
    return total


def describe(path: str, exc: BaseException) -> str:
    """One line for an exception that h5py or nir raised on a damaged file."""
    msg = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, AssertionError) and not msg:  # nir's str2NIRNode: `assert type in ...`
        return (
            f"{path} could not be read as a NIR graph: a node has a type that nir "
            f"{nir.__version__} does not know, or is malformed"
        )
    return f"{path} could not be read as a NIR graph ({type(exc).__name__}: {msg})"


def read(path: str) -> nir.NIRGraph:
    """``nir.read`` (no type check: see nir_io) with every failure as one :class:`Refused` line."""
    try:
        graph = nir.read(path, type_check=False)
    except Exception as exc:  # anything h5py/nir raise on a damaged file is a refusal
        raise Refused(describe(path, exc)) from None
    if not isinstance(graph, nir.NIRGraph):
        raise Refused(f"{path} holds a single {type(graph).__name__} node, not a NIR graph")
    return graph


def check(path: str, max_bytes: int) -> None:
    """Refuse (:class:`Refused`) anything unsafe or unreadable in the NIR file ``path``."""
    try:
        if not h5py.is_hdf5(path):
            raise Refused(
                f"{path} is not a NIR file (NIR graphs are HDF5 files written by nir.write)"
            )
        with h5py.File(path, "r") as f:
            if not isinstance(f.get("node", getlink=True), h5py.HardLink):
                raise Refused(f"{path} is an HDF5 file but not a NIR graph (no 'node' group)")
            _walk(f["node"], f"{path}: /node", max_bytes, set())
    except Refused:
        raise
    except Exception as exc:
        raise Refused(describe(path, exc)) from None
    read(path)  # the trial read: where libhdf5 would hang or crash


def main(argv: list[str]) -> None:
    max_bytes, paths = int(argv[0]), argv[1:]
    for path in paths:
        try:
            check(path, max_bytes)
            line = "ok"
        except Refused as exc:
            line = "refused " + str(exc).replace("\n", " ")
        print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
