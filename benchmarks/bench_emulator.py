"""The bit-exact Loihi emulator against Lava's CPU simulation: same run, same images, one process.

Builds the fixed-point plan of RUN once (the recorded grid of a ``finetune-fixed-point`` run, or a
calibration), runs the same N test images through real Lava (``Loihi2SimCfg``, fixed point) and
through ``nalln.loihi.emulator`` (batched torch), checks that every spike is equal, and reports
seconds per image and the ratio. Lava's build time (process graph, compile, start) is reported
apart from its run time; the ratio uses run time only, the figure that favours Lava.

    python benchmarks/bench_emulator.py RUN [--data ROOT] [--n 16] [--se static] [--json OUT]

Prints a table and writes JSON (default ``benchmarks/results/bench_emulator.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from nalln.conversion.lava_backend import run_lava
from nalln.conversion.nir_io import read_artefact, write_artefact
from nalln.conversion.plan import lower
from nalln.conversion.sources import load_source, load_split, prepare, training_images
from nalln.io import write_json
from nalln.ir.se_mode import SEMode
from nalln.loihi.emulator import emulate_batched
from nalln.loihi.grid import fixed_point_plan
from nalln.run_data import run_index
from nalln.textfmt import format_table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--se", type=SEMode, choices=SEMode.deployable(), default=SEMode.STATIC)
    ap.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "bench_emulator.json"
    )
    args = ap.parse_args()
    source = load_source(args.run)
    loaded = source.loaded
    x, _, _ = load_split(source, args.data, "test", args.n, False)
    train_x, _ = training_images(loaded, run_index(loaded, args.data), 256, False)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_artefact(tmp, prepare(loaded, args.se, args.data, False, train_x).exported)
        plan = lower(read_artefact(tmp))
    qp = fixed_point_plan(plan, train_x[:64], loaded.run_meta, False)
    lava = run_lava(qp, x)
    t0 = time.perf_counter()
    emu = emulate_batched(qp, x, 32, "cpu")
    emu_s = time.perf_counter() - t0
    exact = all(torch.equal(emu.trace.spikes[k], v) for k, v in lava.trace.spikes.items())
    exact = exact and torch.equal(emu.trace.logits.argmax(1), lava.trace.logits.argmax(1))
    n = len(x)
    rows = [
        ["Lava fixed point (CPU simulation)", lava.run_seconds / n, lava.build_seconds],
        ["nalln.loihi emulator (torch, CPU)", emu_s / n, 0.0],
    ]
    ratio = (lava.run_seconds / n) / max(emu_s / n, 1e-12)
    tag = "SYNTHETIC data - " if source.synthetic else ""
    print(f"{tag}{args.run}: {n} test images, SE {args.se}; measured on this machine")
    print(format_table(rows, ["back-end", "seconds per image", "build seconds"], "lrr"))
    print(f"every spike equal: {exact}; emulator speed-up over Lava (run time): {ratio:.1f}x")
    result = {
        "source": "measured",
        "run": args.run,
        "images": n,
        "se": args.se.value,
        "synthetic": source.synthetic,
        "grid": qp.report.get("grid", "calibrated"),
        "lava_seconds_per_image": lava.run_seconds / n,
        "lava_build_seconds": lava.build_seconds,
        "emulator_seconds_per_image": emu_s / n,
        "speedup_run_time": ratio,
        "every_spike_equal": bool(exact),
        "torch_threads": torch.get_num_threads(),
    }
    write_json(args.json, result)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
