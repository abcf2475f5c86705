"""NIR files from strangers: what ``nir.read`` does with hostile HDF5, and fuzzing of a checked
reader (nir_reference_reader.read_nir) run in a worker process with a time limit.

These tests pin down the facts a NIR loader has to handle (docs/reliability.md, "NIR files") on
nir 1.0.8 / h5py 3.12 / HDF5 1.14.4; the second half holds nalln's own reader,
``nalln.conversion.nir_io.read_graph`` (a time-limited checking child, nir_probe.py), to them.
"""

from __future__ import annotations

import pickle
import select
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nalln.conversion import nir_io
from nalln.conversion.nir_io import read_graph, read_graphs
from nalln.errors import NallnError

from .helpers import assert_clean_error, cli_env, fuzz_settings, run_cli
from .nir_reference_reader import read_nir

WORKER = Path(__file__).with_name("nir_reference_reader.py")
READ_TIMEOUT_S = 4.0  # for one read; the worker's start-up (imports torch) is not counted
STARTUP_TIMEOUT_S = 120.0
# read_graph's own limit in the worker; the worker waits far longer, so a "hang" outcome would
# mean read_graph itself hung (its checking child was not killed)
NALLN_TIMEOUT_S = "5"
NALLN_READ_TIMEOUT_S = 60.0
OUTCOMES: Counter[str] = Counter()
NALLN_OUTCOMES: Counter[str] = Counter()


def _graph() -> nir.NIRGraph:
    """A small graph with the node types a NeurALLNet export uses."""
    return nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([1, 4, 4])}),
            "conv": nir.Conv2d(
                input_shape=(4, 4),
                weight=np.ones((2, 1, 3, 3), dtype=np.float32),
                stride=1,
                padding=1,
                dilation=1,
                groups=1,
                bias=np.zeros(2, dtype=np.float32),
            ),
            "lif": nir.LIF(
                tau=np.full((2, 4, 4), 0.002),
                r=np.full((2, 4, 4), 2.0),
                v_leak=np.zeros((2, 4, 4)),
                v_threshold=np.ones((2, 4, 4)),
            ),
            "flat": nir.Flatten(start_dim=0, end_dim=-1, input_type={"input": np.array([2, 4, 4])}),
            "fc": nir.Affine(weight=np.ones((3, 32), dtype=np.float32), bias=np.zeros(3)),
            "output": nir.Output(output_type={"output": np.array([3])}),
        },
        edges=[
            ("input", "conv"),
            ("conv", "lif"),
            ("lif", "flat"),
            ("flat", "fc"),
            ("fc", "output"),
        ],
    )


class NirWorker:
    """A child process running read_nir: a read past the time limit is a hang, a dead child a
    crash; either way the worker is replaced and the caller goes on."""

    def __init__(self, reader: str = "reference", read_timeout_s: float = READ_TIMEOUT_S) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.reader = reader
        self.read_timeout_s = read_timeout_s

    def _start(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=cli_env(NALLN_NIR_READER=self.reader, NALLN_NIR_TIMEOUT_S=NALLN_TIMEOUT_S),
            )
            assert self.proc.stdout is not None
            ready, _, _ = select.select([self.proc.stdout], [], [], STARTUP_TIMEOUT_S)
            assert ready and self.proc.stdout.readline() == "ready\n", "NIR worker did not start"
        return self.proc

    def read(self, path: Path) -> str:
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"{path}\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], self.read_timeout_s)
        if not ready:
            self.close()
            return "hang"
        line = proc.stdout.readline()
        if not line:
            rc = proc.wait()
            self.proc = None
            return f"crash {rc}"
        return line.rstrip("\n")

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def worker() -> Iterator[NirWorker]:
    w = NirWorker()
    yield w
    w.close()
    if OUTCOMES:  # shown with -s; docs/reliability.md quotes these counts
        print(f"\nNIR fuzz outcomes: {dict(OUTCOMES)}")


@pytest.fixture(scope="module")
def nalln_worker() -> Iterator[NirWorker]:
    w = NirWorker("nalln", NALLN_READ_TIMEOUT_S)
    yield w
    w.close()
    if NALLN_OUTCOMES:
        print(f"\nread_graph fuzz outcomes: {dict(NALLN_OUTCOMES)}")


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nalln-fuzz-nir-") as d:
        yield Path(d)


class _Seed(bytes):
    def __repr__(self) -> str:  # keeps hypothesis' failure reports readable
        return f"<seed NIR file, {len(self)} bytes>"


@pytest.fixture(scope="module")
def seed(scratch: Path) -> bytes:
    path = scratch / "seed.nir"
    nir.write(path, _graph())
    return _Seed(path.read_bytes())


def test_seed_reads_back(scratch: Path, seed: bytes, worker: NirWorker) -> None:
    path = scratch / "copy.nir"
    path.write_bytes(seed)
    assert set(read_nir(str(path)).nodes) == set(_graph().nodes)
    assert worker.read(path) == "ok"


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """Edits at uniformly drawn offsets (hypothesis' integers favour small ones, and the HDF5
    structures worth hitting, like the global heap, sit in the middle of the file)."""
    rnd = draw(st.randoms(use_true_random=False))
    b = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        pos = rnd.randrange(len(b))
        kind = draw(st.sampled_from(["byte", "byte", "int", "truncate"]))
        if kind == "byte":
            b[pos] = rnd.randrange(256)
        elif kind == "int":
            b[pos : pos + 8] = struct.pack("<Q", rnd.choice([0, 1, 2**31, 2**63, 2**64 - 1]))
        else:
            del b[max(pos, 8) :]
    return bytes(b)


@fuzz_settings(300, deadline_s=None)
@given(data=st.data())
def test_mutated_nir_files_never_escape_the_checked_reader(
    scratch: Path, seed: bytes, worker: NirWorker, data
) -> None:
    """Outcome of every mutated file: read, refused in one line, or a libhdf5 hang/crash that
    the time-limited worker contained. An exception of any other kind fails the test."""
    path = scratch / "mutated.nir"
    path.write_bytes(data.draw(mutated(seed)))
    outcome = worker.read(path)
    OUTCOMES[outcome.split(" ", 1)[0]] += 1
    assert outcome == "ok" or outcome.split(" ", 1)[0] in ("clean", "hang", "crash"), outcome
    if outcome.startswith("clean"):
        assert "\\n" not in outcome


@fuzz_settings(100, deadline_s=None)
@given(blob=st.binary(max_size=1024).map(lambda b: b"\x89HDF\r\n\x1a\n" + b))
def test_random_hdf5_like_bytes_are_refused(scratch: Path, worker: NirWorker, blob: bytes) -> None:
    path = scratch / "random.nir"
    path.write_bytes(blob)
    outcome = worker.read(path)
    assert outcome.split(" ", 1)[0] in ("clean", "hang", "crash"), outcome


def _global_heap_hang(seed: bytes) -> bytes:
    """One byte: the length of the string "NIRGraph" in the HDF5 global heap, 8 -> 140 (the
    fuzzer's first hang changed the length of a later string the same way)."""
    entry = struct.pack("<Q", 8) + b"NIRGraph"
    pos = seed.find(entry, seed.find(b"GCOL"))
    assert pos > 0, "layout of nir.write changed; re-derive the hang input"
    b = bytearray(seed)
    b[pos] = 0x8C
    return bytes(b)


def test_libhdf5_global_heap_hang_is_contained(
    scratch: Path, seed: bytes, worker: NirWorker
) -> None:
    """Found by the fuzzer: HDF5 1.14.4 loops forever reading any string of this file, so
    nir.read never returns. Only a time-limited child process protects the caller."""
    path = scratch / "hang.nir"
    path.write_bytes(_global_heap_hang(seed))
    assert worker.read(path) == "hang"
    good = scratch / "after.nir"
    good.write_bytes(seed)
    assert worker.read(good) == "ok"  # a fresh worker took over


def test_external_storage_reads_a_local_file_and_is_refused(scratch: Path) -> None:
    """HDF5 lets a dataset's bytes live in any file: nir.read returns its contents as weights."""
    secret = scratch / "secret.txt"
    secret.write_bytes(b"0123456789abcdef" * 6)
    path = scratch / "external.nir"
    nir.write(path, _graph())
    with h5py.File(path, "r+") as f:
        del f["node/nodes/fc/weight"]
        f["node/nodes/fc"].create_dataset(
            "weight", shape=(3, 32), dtype="u1", external=[(str(secret), 0, 96)]
        )
    leaked = nir.read(path, type_check=False).nodes["fc"].weight
    assert leaked.tobytes() == secret.read_bytes()  # what an unchecked loader would use
    with pytest.raises(NallnError, match="stores its data in another file"):
        read_nir(str(path))


def test_links_to_other_files_and_cycles_are_refused(scratch: Path) -> None:
    other = scratch / "other.nir"
    nir.write(other, _graph())
    ext = scratch / "extlink.nir"
    nir.write(ext, _graph())
    with h5py.File(ext, "r+") as f:
        del f["node/nodes/fc"]
        f["node/nodes/fc"] = h5py.ExternalLink(str(other), "/node/nodes/fc")
    assert nir.read(ext, type_check=False).nodes["fc"] is not None  # followed silently
    with pytest.raises(NallnError, match="links to another file"):
        read_nir(str(ext))

    cyc = scratch / "cycle.nir"
    nir.write(cyc, _graph())
    with h5py.File(cyc, "r+") as f:
        f["node/nodes/fc/loop"] = f["node/nodes"]  # hard link back to a parent group
    with pytest.raises(RecursionError):
        nir.read(cyc, type_check=False)
    with pytest.raises(NallnError, match="a link cycle"):
        read_nir(str(cyc))


def test_huge_declared_arrays_are_refused_before_reading(scratch: Path) -> None:
    """A few KB can declare 10^10 float64 (80 GB, never written): nir.read would allocate it."""
    path = scratch / "huge.nir"
    nir.write(path, _graph())
    with h5py.File(path, "r+") as f:
        del f["node/nodes/fc/weight"]
        f["node/nodes/fc"].create_dataset("weight", shape=(100_000, 100_000), chunks=(1, 1000))
    assert path.stat().st_size < 100_000
    with pytest.raises(NallnError, match="declares 10,000,000,000 elements"):
        read_nir(str(path))


def test_pickled_bytes_inside_a_nir_file_are_never_unpickled(scratch: Path) -> None:
    """nir.read and h5py only ever hand back arrays and strings: a pickle stays inert bytes."""
    marker = scratch / "pwned-by-nir"
    payload = pickle.dumps(_CreateFile(str(marker)))
    path = scratch / "pickle.nir"
    nir.write(path, _graph())
    with h5py.File(path, "r+") as f:
        f["node/nodes/fc/metadata/evil"] = np.void(payload)
    graph = read_nir(str(path))  # extra metadata is accepted, as inert data
    assert graph.nodes["fc"].metadata["evil"].tobytes() == payload
    assert not marker.exists()


class _CreateFile:
    """Unpickling this creates a file: proof of code execution if it ever appears."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


# nalln.conversion.nir_io.read_graph, the reader `nalln simulate`/`convert` use: the same files.


@fuzz_settings(200, deadline_s=None)
@given(data=st.data())
def test_nalln_nir_reader_on_mutated_files(
    scratch: Path, seed: bytes, nalln_worker: NirWorker, data
) -> None:
    """read_graph reads or refuses in one line; a libhdf5 hang or crash is contained by its own
    checking child (before that: 27 tracebacks in 526 files, and hangs)."""
    path = scratch / "mutated-nalln.nir"
    path.write_bytes(data.draw(mutated(seed)))
    outcome = nalln_worker.read(path)
    NALLN_OUTCOMES[outcome.split(" ", 1)[0]] += 1
    assert outcome == "ok" or outcome.startswith("clean "), outcome
    assert "\\n" not in outcome


def _edited(scratch: Path, name: str, edit) -> Path:
    """The seed graph written to ``name``, then changed by ``edit(h5py.File)``."""
    path = scratch / name
    nir.write(path, _graph())
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def test_nalln_nir_reader_reads_a_good_file(scratch: Path, seed: bytes) -> None:
    path = scratch / "good-nalln.nir"
    path.write_bytes(seed)
    assert sorted(read_graph(path).nodes) == sorted(_graph().nodes)


def test_nalln_nir_reader_refuses_a_link_cycle(scratch: Path) -> None:
    def loop(f: h5py.File) -> None:
        f["node/nodes/fc/loop"] = f["node/nodes"]  # hard link back to a parent group

    with pytest.raises(NallnError, match="links back to an object seen before"):
        read_graph(_edited(scratch, "cycle-nalln.nir", loop))


def test_nalln_nir_reader_refuses_external_storage(scratch: Path) -> None:
    secret = scratch / "secret2.txt"
    secret.write_bytes(b"0123456789abcdef" * 6)

    def external(f: h5py.File) -> None:
        del f["node/nodes/fc/weight"]
        f["node/nodes/fc"].create_dataset(
            "weight", shape=(3, 32), dtype="u1", external=[(str(secret), 0, 96)]
        )

    with pytest.raises(NallnError, match="fc/weight stores its data in another file; refused"):
        read_graph(_edited(scratch, "external-nalln.nir", external))


def test_nalln_nir_reader_refuses_virtual_datasets(scratch: Path) -> None:
    other = scratch / "vds-source.h5"
    with h5py.File(other, "w") as f:
        f["w"] = np.arange(96, dtype=np.float32).reshape(3, 32)

    def virtual(f: h5py.File) -> None:
        layout = h5py.VirtualLayout(shape=(3, 32), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(other), "w", shape=(3, 32))
        del f["node/nodes/fc/weight"]
        f["node/nodes/fc"].create_virtual_dataset("weight", layout)

    path = _edited(scratch, "vds-nalln.nir", virtual)
    assert nir.read(path, type_check=False).nodes["fc"].weight[1, 0] == 32  # read through
    with pytest.raises(NallnError, match="fc/weight stores its data in another file; refused"):
        read_graph(path)


def test_nalln_nir_reader_refuses_external_links(scratch: Path) -> None:
    other = scratch / "other-nalln.nir"
    nir.write(other, _graph())

    def link(f: h5py.File) -> None:
        del f["node/nodes/fc"]
        f["node/nodes/fc"] = h5py.ExternalLink(str(other), "/node/nodes/fc")

    with pytest.raises(NallnError, match=r"nodes/fc is a link into another file \("):
        read_graph(_edited(scratch, "extlink-nalln.nir", link))


def test_nalln_nir_reader_refuses_soft_links(scratch: Path) -> None:
    def soft(f: h5py.File) -> None:
        f["node/nodes/fc/metadata/alias"] = h5py.SoftLink("/node/nodes")

    with pytest.raises(NallnError, match="alias is a SoftLink /node/nodes; NIR files have none"):
        read_graph(_edited(scratch, "softlink-nalln.nir", soft))


def test_nalln_nir_reader_refuses_huge_declared_arrays(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def huge(f: h5py.File) -> None:
        del f["node/nodes/fc/weight"]
        f["node/nodes/fc"].create_dataset("weight", shape=(100_000, 100_000), chunks=(1, 1000))

    path = _edited(scratch, "huge-nalln.nir", huge)
    assert path.stat().st_size < 100_000
    with pytest.raises(NallnError, match="declares 10,000,000,000 elements"):
        read_graph(path)
    monkeypatch.setenv("NALLN_NIR_MAX_BYTES", "100")  # the limit is configurable
    with pytest.raises(NallnError, match="over the limit of 100 bytes"):
        read_graph(scratch / "good-nalln.nir")
    monkeypatch.setenv("NALLN_NIR_MAX_BYTES", "lots")
    with pytest.raises(NallnError, match="NALLN_NIR_MAX_BYTES='lots' is not a positive number"):
        read_graph(scratch / "good-nalln.nir")


def test_nalln_nir_reader_stops_a_libhdf5_hang(
    scratch: Path, seed: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The global-heap file hangs nir.read forever; read_graph's checking child is killed and
    the error names the file that hung (the second of a hybrid export's segments here)."""
    good, hang = scratch / "segment_0.nir", scratch / "segment_1.nir"
    good.write_bytes(seed)
    hang.write_bytes(_global_heap_hang(seed))
    monkeypatch.setenv("NALLN_NIR_TIMEOUT_S", "3")
    start = time.monotonic()
    with pytest.raises(NallnError) as exc:
        read_graphs([good, hang])
    assert time.monotonic() - start < 30
    assert str(exc.value) == (
        f"reading {hang} did not finish in 3 s; the file is damaged or hostile"
    )


def test_nalln_nir_reader_survives_a_crashing_reader(
    scratch: Path, seed: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that crashes libhdf5 kills the child, not the caller (crash injected: a checking
    script that kills itself)."""
    script = scratch / "crashing_probe.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    monkeypatch.setattr(nir_io, "PROBE_SCRIPT", script)
    path = scratch / "crash-nalln.nir"
    path.write_bytes(seed)
    with pytest.raises(NallnError, match=r"stopped the NIR checking process \(signal 9\)"):
        read_graph(path)


def test_a_hanging_nir_file_fails_the_cli_in_one_line(scratch: Path, seed: bytes) -> None:
    hang = scratch / "hang-cli.nir"
    hang.write_bytes(_global_heap_hang(seed))
    out = scratch / "sim-out"
    proc = run_cli("simulate", hang, "--backend", "norse", "--out", out, NALLN_NIR_TIMEOUT_S="3")
    assert_clean_error(proc, "did not finish in 3 s", "damaged or hostile")
    assert not out.exists()
