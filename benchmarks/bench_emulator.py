"""The bit-exact Loihi emulator against Lava's CPU simulation: same run, same images, one process.

Builds the fixed-point plan of RUN once (the recorded grid of a ``finetune-fixed-point`` run, or a
calibration), runs the same N test images through real Lava (``Loihi2SimCfg``, fixed point) and
through ``nalln.loihi.emulator.emulate_batched`` exactly as ``nalln simulate --backend
loihi-emulator`` calls it (its batch size, ``pick_device("auto")``), checks that every spike of
every layer and every logit is equal, and reports seconds per image and the ratio. Lava's build
time (process graph, compile, start) is reported apart from its run time; the ratio uses run
time only, the figure that favours Lava. The emulator is timed cold (its first call, one-time
oneDNN set-up included) and warm (the median of ``--repeats`` further calls, half before Lava
and half after; the simulate command pays the cold figure once per run). Wall-clock for both,
and CPU seconds: on a shared machine a single-threaded emulator gets a smaller share of the
cores than Lava's many processes, so the CPU-time ratio is the steadier figure. Lava's run CPU
(all its processes) is the CPU of the N-image run minus that of a second, ``--lava-baseline``
image run of the same graph (the build costs the same); the load average is recorded.

    python benchmarks/bench_emulator.py RUN [--data ROOT] [--n 64] [--se static] [--json OUT]

Prints a table and writes JSON (default ``benchmarks/results/bench_emulator.json``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from nalln.conversion.lava_backend import run_lava
from nalln.conversion.nir_io import read_artefact, write_artefact
from nalln.conversion.plan import lower
from nalln.conversion.simulate import EMULATOR_BATCH
from nalln.conversion.sources import load_source, load_split, prepare, training_images
from nalln.inference import pick_device
from nalln.io import write_json
from nalln.ir.se_mode import SEMode
from nalln.loihi.emulator import cpu_batch, emulate_batched
from nalln.loihi.grid import fixed_point_plan
from nalln.run_data import run_index
from nalln.textfmt import format_table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--lava-baseline", type=int, default=8, help="images of the 2nd Lava run")
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
    device = pick_device("auto")
    n = len(x)

    def emulator() -> tuple[float, float, object]:
        t0, c0 = time.perf_counter(), time.process_time()
        em = emulate_batched(qp, x, EMULATOR_BATCH, device)
        return time.perf_counter() - t0, time.process_time() - c0, em

    cold_s, _, emu = emulator()
    before = [emulator() for _ in range(args.repeats // 2)]
    cpu0 = _cpu_all()
    lava = run_lava(qp, x)
    lava_cpu_all = _cpu_all() - cpu0  # every Lava process, build included
    lava_cpu = lava_cpu_all / n
    k = min(args.lava_baseline, n - 1)
    cpu0 = _cpu_all()
    run_lava(qp, x[:k])  # same graph, fewer images: the difference is the run's CPU time
    lava_run_cpu = (lava_cpu_all - (_cpu_all() - cpu0)) / (n - k)
    warm = before + [emulator() for _ in range(args.repeats - len(before))]
    warm_s = statistics.median(w[0] for w in warm)
    warm_cpu = statistics.median(w[1] for w in warm)
    exact = all(torch.equal(emu.trace.spikes[k], v) for k, v in lava.trace.spikes.items())
    exact = exact and set(emu.trace.spikes) == set(lava.trace.spikes)
    exact = exact and torch.equal(emu.trace.logits.argmax(1), lava.trace.logits.argmax(1))
    exact = exact and all(
        torch.equal(w[2].trace.outputs, emu.trace.outputs) for w in warm
    )  # every repeat gives the same outputs
    logit_diff = float((emu.trace.logits.double() - lava.trace.logits.double()).abs().max())
    lava_s = lava.run_seconds / n
    cpu_ratio = lava_run_cpu / (warm_cpu / n)
    rows = [
        ["Lava fixed point (CPU simulation)", lava_s, lava_run_cpu, lava.build_seconds, 1.0],
        ["emulator, warm (median)", warm_s / n, warm_cpu / n, 0.0, lava_s / (warm_s / n)],
        ["emulator, cold (first call)", cold_s / n, "-", 0.0, lava_s / (cold_s / n)],
    ]
    tag = "SYNTHETIC data - " if source.synthetic else ""
    load = os.getloadavg()
    print(f"{tag}{args.run}: {n} test images, SE {args.se}; measured on this machine")
    batch = cpu_batch(EMULATOR_BATCH, device)
    print(f"emulator on {device}, batch {batch}, torch threads {torch.get_num_threads()}")
    headers = ["back-end", "s/image (wall)", "CPU s/image", "build s", "speed-up (wall)"]
    print(format_table(rows, headers, "lrrrr"))
    print(f"CPU seconds per image, Lava (all processes, run only) / emulator: {cpu_ratio:.0f}x")
    print(
        f"every spike equal: {exact} (largest logit difference {logit_diff:.2g}); "
        f"load average {load[0]:.1f} on {os.cpu_count()} CPUs"
    )
    result = {
        "source": "measured",
        "command": f"python benchmarks/bench_emulator.py {args.run} --n {n}",
        "run": args.run,
        "images": n,
        "se": args.se.value,
        "synthetic": source.synthetic,
        "grid": qp.report.get("grid", "calibrated"),
        "lava_seconds_per_image": lava_s,
        "lava_build_seconds": lava.build_seconds,
        "emulator_device": str(device),
        "emulator_batch_size": batch,
        "emulator_seconds_per_image": warm_s / n,
        "emulator_cpu_seconds_per_image": warm_cpu / n,
        "emulator_cold_seconds_per_image": cold_s / n,
        "emulator_repeats": args.repeats,
        "lava_cpu_seconds_per_image_build_included": lava_cpu,
        "lava_cpu_seconds_per_image_run": lava_run_cpu,
        "lava_cpu_run_method": f"CPU of a {n}-image run minus a {k}-image run, over {n - k} images",
        "speedup_run_time": lava_s / (warm_s / n),
        "speedup_cpu_time": cpu_ratio,
        "speedup_run_time_cold": lava_s / (cold_s / n),
        "every_spike_equal": bool(exact),
        "largest_logit_difference": logit_diff,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_1min": load[0],
    }
    write_json(args.json, result)
    print(f"wrote {args.json}")
    return 0


def _cpu_all() -> float:
    """CPU seconds of this process and its finished children (Lava runs each process model in
    a child process, reaped when its runtime stops)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    sys.exit(main())
