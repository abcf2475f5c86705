"""Throughput of `nalln train` and `nalln predict` against the number of processes (torchrun).

Each configuration trains the same model on the same synthetic data with the same global batch
(so the same updates, docs/distributed.md) and reports the median *epoch* seconds that
`metrics.csv` records - start-up (Python, imports, image loading, the process group) excluded
and reported apart - and the wall time of a sharded `nalln predict` over every image. Ratios
are against one process with one thread, run in the same invocation.

    python benchmarks/bench_distributed.py                 # 64 px, 320 images: ~6 min on 2 cores
    python benchmarks/bench_distributed.py --quick         # 32 px, 96 images: ~1.5 min
    python benchmarks/bench_distributed.py --device cuda   # on a GPU box: 1..N GPUs (NCCL)

Prints a table and writes ``benchmarks/results/bench_distributed.json`` (``--json`` to change).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _env(threads: int) -> dict[str, str]:
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _nalln(procs: int, args: list[str]) -> list[str]:
    if procs == 1:
        return [sys.executable, "-m", "nalln", *args]
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)]
    return [sys.executable, *launch, "-m", "nalln", *args]


def _run(cmd: list[str], threads: int) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=_env(threads), check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 px, 96 images, 2 epochs")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU a rank)")
    ap.add_argument(
        "--predict-per-class", type=int, default=400, help="images per class for predict"
    )
    ap.add_argument("--json", default="benchmarks/results/bench_distributed.json")
    args = ap.parse_args()
    from nalln.data.synth import SynthSpec, generate

    size, per_class, epochs = (32, 24, 2) if args.quick else (64, 80, 3)
    cores = os.cpu_count() or 1
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    if args.device == "cuda":
        configs = [(n, 1, False) for n in range(1, gpus + 1)] + [(gpus, 1, True)]
    else:
        configs = [(1, 1, False), (1, cores, False)]
        configs += [(n, max(1, cores // n), False) for n in (2, 4) if n <= cores]
        configs += [(2, max(1, cores // 2), True)] if cores >= 2 else []
    rows = []
    with tempfile.TemporaryDirectory(prefix="nalln-bench-dist-") as tmp:
        data = Path(tmp) / "data"
        generate(data, SynthSpec(n_per_class=per_class, size=size, seed=3), progress=False)
        many = Path(tmp) / "predict"  # a larger set: sharding pays when compute beats start-up
        n_pred = args.predict_per_class // (4 if args.quick else 1)
        generate(many, SynthSpec(n_per_class=n_pred, size=size, seed=4), progress=False)
        flags = ["--image-size", str(size), "--epochs", str(epochs), "--batch-size", "16"]
        flags += ["--patience", "50", "--device", args.device, "-q"]
        for procs, threads, sync in configs:
            run = Path(tmp) / f"run-{procs}-{threads}-{int(sync)}"
            cmd = _nalln(procs, ["train", "--data", str(data), "--out", str(run), *flags])
            wall = _run(cmd + (["--sync-bn"] if sync else []), threads)
            with open(run / "metrics.csv", newline="") as fh:
                epoch_s = [float(r["seconds"]) for r in csv.DictReader(fh)]
            pred = Path(tmp) / f"pred-{procs}-{threads}-{int(sync)}.csv"
            predict = ["predict", str(run), str(many), "--out", str(pred), "--device", args.device]
            pred_wall = _run(_nalln(procs, predict), threads)
            rows.append(
                {
                    "processes": procs,
                    "threads_per_process": threads,
                    "sync_bn": sync,
                    "median_epoch_s": statistics.median(epoch_s),
                    "train_wall_s": wall,
                    "startup_and_io_s": wall - sum(epoch_s),
                    "predict_wall_s": pred_wall,
                    "final_val_accuracy": None,
                }
            )
            with open(run / "metrics.csv", newline="") as fh:
                rows[-1]["final_val_accuracy"] = float(list(csv.DictReader(fh))[-1]["val_accuracy"])
    base = rows[0]
    for r in rows:
        r["train_speedup"] = base["median_epoch_s"] / r["median_epoch_s"]
        r["predict_speedup"] = base["predict_wall_s"] / r["predict_wall_s"]
    images = 4 * per_class
    predicted = 4 * n_pred
    result = {
        "what": "nalln train / predict throughput against torchrun processes (measured)",
        "machine": {
            "platform": platform.platform(),
            "cpu_count": cores,
            "device": args.device,
            "gpus": gpus,
            "torch": torch.__version__,
        },
        "data": f"SYNTHETIC, {images} images at {size} px (train split ~80%), global batch 16; "
        f"predict: {predicted} other images",
        "epochs": epochs,
        "baseline": "1 process, 1 thread, same invocation",
        "rows": rows,
    }
    head = f"{'procs':>5} {'thr':>3} {'syncBN':>6} {'epoch s':>8} {'x':>5} {'start s':>8}"
    head += f" {'predict s':>9} {'x':>5} {'val acc':>7}"
    print(head)
    for r in rows:
        print(
            f"{r['processes']:>5} {r['threads_per_process']:>3} {r['sync_bn']!s:>6} "
            f"{r['median_epoch_s']:>8.2f} {r['train_speedup']:>5.2f} "
            f"{r['startup_and_io_s']:>8.1f} {r['predict_wall_s']:>9.1f} "
            f"{r['predict_speedup']:>5.2f} {r['final_val_accuracy']:>7.3f}"
        )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
