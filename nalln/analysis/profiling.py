"""Hardware profile of a model: size, latency distribution, throughput and peak memory.

Everything here is measured on the machine it runs on (wall clock, ``time.perf_counter``,
after warm-up; CUDA synchronised) or counted (parameters, FP32 bytes = parameters x 4). Dense
CPU/GPU speed does not depend on the weights, so a freshly initialised model of a given
configuration gives the same timings as a trained one of that configuration.
"""

from __future__ import annotations

import gc
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from nalln.errors import NallnError
from nalln.inference import TF32_ENV, pick_device
from nalln.io import write_frame, write_json

IMPLEMENTATIONS = ("fast", "reference")
MB = 1e6  # sizes are reported in decimal megabytes (the paper's 1.35 MB = 336,544 x 4 bytes)


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parse_threads(text: str) -> tuple[int, ...]:
    """``"1,all"`` -> ``(1, n_cpus)``; duplicates dropped, order kept."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part == "all":
            n = available_cpus()
        else:
            try:
                n = int(part)
            except ValueError:
                raise NallnError(
                    f"--threads takes thread counts or 'all', e.g. 1,all; got {part!r}"
                ) from None
            if n < 1:
                raise NallnError(f"thread counts must be at least 1; got {n}")
        if n not in out:
            out.append(n)
    if not out:
        raise NallnError("--threads is empty; give e.g. 1 or 1,all")
    return tuple(out)


def parse_sizes(text: str, what: str = "--batch-sizes") -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in str(text).split(",") if s.strip())
    except ValueError:
        raise NallnError(f"{what} takes positive integers, e.g. 1,4,16; got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise NallnError(f"{what} takes positive integers, e.g. 1,4,16; got {text!r}")
    return tuple(dict.fromkeys(sizes))


# --------------------------------------------------------------------------- measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(
    fn: Callable[[], Any], repeats: int, warmup: int, device: torch.device
) -> list[float]:
    """Wall-clock milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """Median, mean, spread and tails of latency samples (milliseconds)."""
    s = sorted(samples_ms)
    n = len(s)

    def q(p: float) -> float:
        return s[min(n - 1, max(0, round(p * (n - 1))))]

    return {
        "median_ms": statistics.median(s),
        "mean_ms": statistics.fmean(s),
        "std_ms": statistics.pstdev(s) if n > 1 else 0.0,
        "min_ms": s[0],
        "p05_ms": q(0.05),
        "p95_ms": q(0.95),
        "max_ms": s[-1],
        "n": n,
    }


def _proc_status() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process in kB, from /proc (Linux)."""
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) for k in ("VmRSS", "VmHWM")}


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def trim_heap() -> None:
    """Return freed heap pages to the OS (glibc), so RSS reflects live memory only."""
    import contextlib
    import ctypes

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: deltas are lower bounds
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_rss_delta(fn: Callable[[], Any], calls: int = 1) -> dict[str, Any]:
    """Peak resident memory of ``calls`` calls of ``fn`` above the RSS before them (MB).

    Linux: the kernel's peak-RSS counter is reset just before (``/proc/self/clear_refs``),
    so the peak belongs to these calls only. Elsewhere ``ru_maxrss`` is used; it cannot be
    reset, so the delta is only right when nothing earlier in the process used more memory.
    Freed heap is returned to the OS first; otherwise the calls could reuse memory that an
    earlier, larger computation left behind and the delta would hide their peak.
    """
    trim_heap()
    try:
        before = _proc_status()["VmRSS"]
        exact = _reset_peak_rss()
    except (OSError, AttributeError):
        before, exact = None, False
    if exact:
        for _ in range(calls):
            fn()
        peak = _proc_status()["VmHWM"]
        method = "VmHWM after reset via /proc/self/clear_refs (Linux)"
    else:  # pragma: no cover - non-Linux fallback
        import resource

        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        before = before if before is not None else start
        for _ in range(calls):
            fn()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "ru_maxrss (process-lifetime peak; cannot be reset here)"
    return {
        "rss_before_mb": before * 1024 / MB,
        "peak_rss_mb": peak * 1024 / MB,
        "rss_delta_mb": max(0, peak - before) * 1024 / MB,
        "calls": calls,
        "method": method,
    }


def cuda_peak_allocated(fn: Callable[[], Any], device: torch.device) -> dict[str, float]:
    """Peak CUDA memory allocated by torch during ``fn`` (MB), and above what was held before."""
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak_allocated_mb": peak / MB, "peak_above_before_mb": (peak - base) / MB}


class _Threads:
    """Temporarily set torch's intra-op thread count."""

    def __init__(self, n: int) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


# --------------------------------------------------------------------------- the profile


@dataclass(frozen=True)
class ProfileSpec:
    """What to measure. ``threads`` are CPU settings for single-image latency; throughput
    and CPU memory use the largest of them."""

    threads: tuple[int, ...] = (1,)
    repeats: int = 30
    warmup: int = 3
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    batch_repeats: int = 3
    implementation: str = "fast"
    cuda: bool = True  # also measure on CUDA when a GPU is present
    seed: int = 0

    def __post_init__(self) -> None:
        if self.implementation not in IMPLEMENTATIONS:
            raise NallnError(
                f"unknown implementation {self.implementation!r}; choose "
                f"{' or '.join(IMPLEMENTATIONS)}"
            )
        if self.repeats < 1 or self.batch_repeats < 1 or self.warmup < 0:
            raise NallnError("repeats must be at least 1 and warm-up at least 0")
        if not self.threads or min(self.threads) < 1:
            raise NallnError("thread counts must be at least 1")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise NallnError("batch sizes must be positive")


@dataclass
class ProfileResult:
    summary: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _runner(model: nn.Module, implementation: str) -> nn.Module:
    if implementation == "fast":
        from nalln.models.fast import fast_model

        return fast_model(model)
    return model.eval()


def host_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu_model": cpu,
        "logical_cpus": available_cpus(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_tf32"] = os.environ.get(TF32_ENV, "0") == "1"
    return info


def profile_model(
    model: nn.Module,
    image_size: int,
    spec: ProfileSpec = ProfileSpec(),
    progress: bool = False,
) -> dict[str, Any]:
    """Measure ``model`` (a NeurALLNet) on random normalised input; returns the JSON summary."""
    torch.manual_seed(spec.seed)
    cpu = torch.device("cpu")
    model = model.to(cpu).eval()
    params = count_parameters(model)
    runner = _runner(model, spec.implementation)
    in_ch = getattr(getattr(model, "config", None), "in_channels", 3)
    x1 = torch.randn(1, in_ch, image_size, image_size)
    big_threads = max(spec.threads)
    do_cuda = spec.cuda and torch.cuda.is_available()
    n_jobs = 1 + len(spec.threads) + len(spec.batch_sizes) + (2 + len(spec.batch_sizes)) * do_cuda
    bar = tqdm(total=n_jobs, desc="profiling", disable=not progress, unit="job", leave=False)
    load_before = host_info().get("load_average_1_5_15")

    with torch.inference_mode(), _Threads(big_threads):
        memory: dict[str, Any] = {"cpu": peak_rss_delta(lambda: runner(x1), calls=3)}
        memory["cpu"]["threads"] = big_threads
    bar.update()

    latency = []
    for n in spec.threads:
        with torch.inference_mode(), _Threads(n):
            samples = time_forward(lambda: runner(x1), spec.repeats, spec.warmup, cpu)
        latency.append(
            {"device": "cpu", "threads": n, "batch_size": 1, **summarize(samples)}
            | {"warmup": spec.warmup, "samples_ms": samples}
        )
        bar.update()

    throughput = []
    for bs in spec.batch_sizes:
        xb = torch.randn(bs, in_ch, image_size, image_size)
        with torch.inference_mode(), _Threads(big_threads):
            s = time_forward(lambda xb=xb: runner(xb), spec.batch_repeats, 1, cpu)
        med = statistics.median(s)
        throughput.append(
            {
                "device": "cpu",
                "threads": big_threads,
                "batch_size": bs,
                "batch_median_ms": med,
                "images_per_s": bs / (med / 1e3),
                "repeats": spec.batch_repeats,
            }
        )
        bar.update()

    if do_cuda:
        dev = pick_device("cuda")
        gpu_runner = _runner(_copy_to(model, dev), spec.implementation)
        xg = x1.to(dev)
        with torch.inference_mode():
            memory["cuda"] = cuda_peak_allocated(lambda: gpu_runner(xg), dev)
            bar.update()
            samples = time_forward(lambda: gpu_runner(xg), spec.repeats, spec.warmup, dev)
        latency.append(
            {"device": "cuda", "threads": None, "batch_size": 1, **summarize(samples)}
            | {"warmup": spec.warmup, "samples_ms": samples}
        )
        bar.update()
        for bs in spec.batch_sizes:
            xb = torch.randn(bs, in_ch, image_size, image_size, device=dev)
            with torch.inference_mode():
                s = time_forward(lambda xb=xb: gpu_runner(xb), spec.batch_repeats, 1, dev)
            med = statistics.median(s)
            throughput.append(
                {
                    "device": "cuda",
                    "threads": None,
                    "batch_size": bs,
                    "batch_median_ms": med,
                    "images_per_s": bs / (med / 1e3),
                    "repeats": spec.batch_repeats,
                }
            )
            bar.update()
    else:
        memory["cuda"] = None
    bar.close()
    cfg = getattr(model, "config", None)
    host = host_info()
    host["load_average_before"] = load_before
    return {
        "implementation": spec.implementation,
        "image_size": image_size,
        "num_steps": getattr(cfg, "num_steps", None),
        "parameters": params,
        "parameters_source": "counted (trainable tensors of the model)",
        "fp32_size_bytes": params * 4,
        "fp32_size_mb": params * 4 / MB,
        "median_latency_ms": latency[0]["median_ms"],
        "median_latency_setting": {"device": "cpu", "threads": spec.threads[0], "batch_size": 1},
        "latency": latency,
        "throughput": throughput,
        "memory": memory,
        "host": host,
        "measurement": (
            "measured: wall clock (time.perf_counter) around each forward pass of a random "
            "normalised input, after warm-up runs; CUDA synchronised; image decoding and "
            "preprocessing excluded"
        ),
    }


def _copy_to(model: nn.Module, device: torch.device) -> nn.Module:
    import copy

    return copy.deepcopy(model).to(device).eval()


# --------------------------------------------------------------------------- models, files


def fresh_model(name: str = "neurallnet", seed: int = 0, **overrides: Any) -> nn.Module:
    """A freshly initialised registered model (dense speed does not depend on the weights)."""
    from nalln.models import create

    torch.manual_seed(seed)
    return create(name, **overrides).eval()


def profile(
    run: str | Path | None = None,
    *,
    which: str = "best",
    model_name: str = "neurallnet",
    overrides: dict[str, Any] | None = None,
    spec: ProfileSpec = ProfileSpec(),
    out: str | Path | None = None,
    progress: bool = False,
) -> ProfileResult:
    """Profile a checkpoint (``run``) or a fresh model of a configuration; write files to
    ``out`` (default ``RUN/profile`` for a run, nothing for a fresh model)."""
    overrides = dict(overrides or {})
    if run is not None:
        if overrides or model_name != "neurallnet":
            raise NallnError(
                "model options (--model, --image-size, --num-steps, --width-multiplier) apply "
                "only without RUN: a checkpoint fixes its architecture"
            )
        from nalln.runs import load_model

        loaded = load_model(run, which=which, device="cpu")
        model = loaded.model
        source = {
            "run": str(loaded.run.path) if loaded.run else None,
            "checkpoint": str(loaded.checkpoint.path) if loaded.checkpoint.path else None,
            "weights": "checkpoint",
            "model_name": loaded.run_meta.model_name,
            "model_config": dict(loaded.run_meta.model_config),
            "synthetic": loaded.synthetic,
        }
        if out is None:
            out = (loaded.run.path if loaded.run else Path(run).parent) / "profile"
    else:
        model = fresh_model(model_name, spec.seed, **overrides)
        source = {
            "run": None,
            "checkpoint": None,
            "weights": f"fresh (random initialisation, seed {spec.seed})",
            "model_name": model_name,
            "model_config": model.config.to_dict(),
            "synthetic": None,
        }
    summary = {"source": source}
    summary |= profile_model(model, model.config.image_size, spec, progress)
    result = ProfileResult(summary)
    if out is not None:
        result.files = write_profile_files(summary, Path(out))
        summary["files"] = result.files
        write_json(Path(out) / "profile.json", summary)
    return result


def profile_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """Rows of the printed table: setting, median, p05, p95 latency, throughput at the largest
    batch."""
    rows = []
    best: dict[tuple, dict] = {}
    for t in summary["throughput"]:
        key = (t["device"], t["threads"])
        if key not in best or t["batch_size"] > best[key]["batch_size"]:
            best[key] = t
    for lat in summary["latency"]:
        key = (lat["device"], lat["threads"])
        tp = best.get(key)
        setting = lat["device"] + (f", {lat['threads']} thread(s)" if lat["threads"] else "")
        rows.append(
            [
                setting,
                round(lat["median_ms"], 2),
                round(lat["p05_ms"], 2),
                round(lat["p95_ms"], 2),
                round(tp["images_per_s"], 1) if tp else "-",
                tp["batch_size"] if tp else "-",
            ]
        )
    return rows


PROFILE_TABLE_HEADERS = (
    "setting",
    "median ms",
    "p05 ms",
    "p95 ms",
    "images/s",
    "at batch",
)


def profile_frames(summary: dict[str, Any]) -> dict[str, Any]:
    """The profile's tables as pandas DataFrames: every latency sample, and throughput per
    device, thread count and batch size (what latency.csv and throughput.csv hold)."""
    import pandas as pd

    latency = pd.DataFrame(
        [
            [lat["device"], lat["threads"], i, v]
            for lat in summary["latency"]
            for i, v in enumerate(lat["samples_ms"])
        ],
        columns=["device", "threads", "run", "latency_ms"],
        dtype=object,
    )
    throughput = pd.DataFrame(
        [
            [t["device"], t["threads"], t["batch_size"], t["batch_median_ms"], t["images_per_s"]]
            for t in summary["throughput"]
        ],
        columns=["device", "threads", "batch_size", "batch_median_ms", "images_per_s"],
        dtype=object,
    )
    return {"latency": latency, "throughput": throughput}


def write_profile_files(summary: dict[str, Any], out: Path) -> dict[str, str]:
    """profile.json (written by the caller), latency.csv, throughput.csv and two PNG plots."""
    from nalln.analysis.profile_plots import plot_latency_histogram, plot_throughput

    out.mkdir(parents=True, exist_ok=True)
    synthetic = bool(summary["source"].get("synthetic"))
    files = {"json": str(out / "profile.json")}
    frames = profile_frames(summary)
    files["latency_csv"] = str(write_frame(out / "latency.csv", frames["latency"]))
    files["throughput_csv"] = str(write_frame(out / "throughput.csv", frames["throughput"]))
    files["latency_histogram"] = str(
        plot_latency_histogram(summary, out / "latency_histogram.png", synthetic)
    )
    files["throughput_curve"] = str(plot_throughput(summary, out / "throughput.png", synthetic))
    return files


def run_demo_step(run: Path, data: Path, out: Path, progress: bool) -> dict[str, Any]:
    """Profile the demo run (few repeats: a pipeline check, well under 90 s at 64x64)."""
    spec = ProfileSpec(threads=parse_threads("1,all"), repeats=15, warmup=2, batch_sizes=(1, 4, 16))
    res = profile(run, spec=spec, out=out, progress=progress)
    s = res.summary
    return {
        "median_latency_ms": s["median_latency_ms"],
        "parameters": s["parameters"],
        "fp32_size_mb": s["fp32_size_mb"],
        "files": res.files,
        "synthetic": s["source"]["synthetic"],
    }
