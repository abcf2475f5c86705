"""What the checking child of ``nalln.conversion.nir_io.read_graph`` costs per read.

Exports an untrained default NeurALLNet (64x64, 337k parameters) as a static graph (one file)
and as a hybrid export (five segment files), then times ``read_artefact`` with the child and
with ``nir_io.probe`` switched off (the in-process read and checks alone, i.e. the reader before
the child was added), interleaved so that load from other processes hits both alike. Also times
the child on its own: Python start + ``import h5py, nir``, and the whole check of one file.

    python benchmarks/bench_nir_read.py            # 15 rounds, about 30 s on 2 cores

Prints a table and writes ``benchmarks/results/bench_nir_read.json`` (``--json`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import nalln
from nalln.conversion import nir_io
from nalln.conversion.export import export_model
from nalln.models.blocks import se_blocks


def _median_ms(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _read_ms(folder: Path) -> float:
    start = time.perf_counter()
    nir_io.read_artefact(folder)
    return 1000 * (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "bench_nir_read.json"
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    model = nalln.create("neurallnet", image_size=64).eval()
    gates = {
        n: torch.full((b.pw.conv.out_channels,), 0.5).numpy() for n, b in se_blocks(model).items()
    }
    probe = nir_io.probe
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="nalln-bench-nir-") as tmp:
        for mode in ("static", "hybrid"):
            folder = Path(tmp) / mode
            nir_io.write_artefact(folder, export_model(model, se_mode=mode, gates=gates))
            files = sorted(folder.glob("*.nir"))
            with_child, without = [], []
            for _ in range(args.rounds):
                with_child.append(_read_ms(folder))
                nir_io.probe = lambda paths: None
                without.append(_read_ms(folder))
                nir_io.probe = probe
            a, b = statistics.median(without), statistics.median(with_child)
            mb = sum(f.stat().st_size for f in files) / 1e6
            rows.append(
                {
                    "export": mode,
                    "files": len(files),
                    "megabytes": round(mb, 2),
                    "without_child_ms": round(a, 1),
                    "with_child_ms": round(b, 1),
                    "overhead_ms": round(b - a, 1),
                    "ratio": round(b / a, 2),
                }
            )
        py = [sys.executable, "-P"]
        start = _median_ms(lambda: subprocess.run([*py, "-c", "import h5py, nir"]), args.rounds)
        check = [*py, str(nir_io.PROBE_SCRIPT), str(nir_io.MAX_NIR_BYTES), str(files[0])]
        whole = _median_ms(lambda: subprocess.run(check, capture_output=True), args.rounds)
    load = os.getloadavg()[0]
    print(f"read_artefact, medians of {args.rounds} interleaved rounds (measured)")
    print(f"{'export':<8}{'files':>6}{'MB':>7}{'no child ms':>13}{'child ms':>10}{'ratio':>7}")
    for r in rows:
        print(
            f"{r['export']:<8}{r['files']:>6}{r['megabytes']:>7}{r['without_child_ms']:>13}"
            f"{r['with_child_ms']:>10}{r['ratio']:>7}"
        )
    print(
        f"child alone: start + imports {start:.0f} ms; start + check of one segment {whole:.0f} ms"
    )
    print(f"load average at the end: {load:.1f} ({os.cpu_count()} CPUs)")
    result = {
        "source": "measured",
        "rounds": args.rounds,
        "reads": rows,
        "child_start_imports_ms": round(start, 1),
        "child_check_one_file_ms": round(whole, 1),
        "load_average": round(load, 2),
        "cpus": os.cpu_count(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = args.json.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(result, indent=2) + "\n")
    tmp_json.replace(args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
