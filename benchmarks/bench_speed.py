"""Speed of nalln's fast path against the paper's framework and a naive snnTorch model.

Run by ``make bench`` (not by the tests). Four implementations of the same NeurALLNet with the
same weights, measured side by side in one process on the same input with the same thread
count, in interleaved rounds so that load from other processes spreads evenly over them:

* ``fast``            nalln's fast inference path (nalln.models.fast) and, for training, the
                      reference model with the fused LIF (nalln.models.fast_lif)
* ``reference``       nalln's reference model (snnTorch ``Leaky``, time-folded batches)
* ``snntorch_naive``  every layer once per time step (benchmarks/naive_snntorch.py)
* ``spikingjelly``    SpikingJelly 2.0.0 multi-step mode (benchmarks/sj_model.py)

Peak resident memory of single-image inference is measured in a separate subprocess per
implementation, so one model's peak cannot mask another's. Prints a table, writes JSON
(benchmarks/results/bench_speed.json) and, with ``--update-docs``, the results section of
docs/benchmarks.md.

    python benchmarks/bench_speed.py                 # the full run (~3-5 min on 2 cores)
    python benchmarks/bench_speed.py --quick         # smoke run at 64x64
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nalln.analysis.profiling import (  # noqa: E402
    available_cpus,
    host_info,
    peak_rss_delta,
    summarize,
    trim_heap,
)
from nalln.models import NeurALLNet, create  # noqa: E402
from nalln.models.fast import fast_model  # noqa: E402
from nalln.models.fast_lif import set_lif_backend  # noqa: E402

IMPLS = ("fast", "reference", "snntorch_naive", "spikingjelly")
# design-choice variants, measured alongside (latency and training only)
VARIANTS = ("fast_nchw",)
LABELS = {
    "fast_nchw": "nalln fast path, NCHW layout (no channels_last)",
    "fast": "nalln fast path",
    "reference": "nalln reference (snnTorch)",
    "snntorch_naive": "snnTorch naive per-step",
    "spikingjelly": "SpikingJelly 2.0.0 multi-step",
}
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


# --------------------------------------------------------------------------- models


def calibrated_model(image_size: int, num_steps: int, seed: int = 0) -> NeurALLNet:
    """A fresh NeurALLNet whose BatchNorm statistics come from one random batch.

    Speed does not depend on the weights, but a freshly initialised network is silent beyond
    its first layers; with data-derived BatchNorm statistics every layer spikes (5-20%), so the
    equivalence checks below compare networks that actually fire.
    """
    torch.manual_seed(seed)
    model = create("neurallnet", image_size=image_size, num_steps=num_steps)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, image_size, image_size))
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


def build(impl: str, model: NeurALLNet, train: bool = False) -> torch.nn.Module:
    """The implementation ``impl`` of ``model`` (own copy of the weights)."""
    if impl in ("fast", "fast_nchw"):
        cl = impl == "fast"
        if train:
            return set_lif_backend(copy.deepcopy(model), "fused", channels_last=cl).train()
        return fast_model(model, channels_last=cl)
    if impl == "reference":
        m = copy.deepcopy(model)
        return m.train() if train else m.eval()
    if impl == "snntorch_naive":
        from naive_snntorch import NaiveSnnTorchNeurALLNet

        m = NaiveSnnTorchNeurALLNet(model)
        return m.train() if train else m.eval()
    if impl == "spikingjelly":
        from sj_model import SJNeurALLNet

        m = SJNeurALLNet(model)
        return m.train() if train else m.eval()
    raise ValueError(impl)


# --------------------------------------------------------------------------- measurement


def interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Milliseconds per call; each round calls every function once, in rotating order."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            fns[n]()
            out[n].append((time.perf_counter() - t0) * 1e3)
    return out


def measure_latency(models: dict, x: torch.Tensor, threads: int, rounds: int, warmup: int):
    torch.set_num_threads(threads)
    with torch.inference_mode():
        samples = interleaved({k: (lambda m=m: m(x)) for k, m in models.items()}, rounds, warmup)
    return {k: summarize(v) | {"threads": threads, "samples_ms": v} for k, v in samples.items()}


def measure_throughput(models: dict, xb: torch.Tensor, threads: int, rounds: int):
    torch.set_num_threads(threads)
    with torch.inference_mode():
        samples = interleaved({k: (lambda m=m: m(xb)) for k, m in models.items()}, rounds, 1)
    out = {}
    for k, v in samples.items():
        med = summarize(v)["median_ms"]
        out[k] = {
            "batch_size": len(xb),
            "threads": threads,
            "batch_median_ms": med,
            "images_per_s": len(xb) / (med / 1e3),
            "samples_ms": v,
        }
    return out


def measure_training(model: NeurALLNet, image_size: int, batch: int, threads: int, rounds: int):
    """Images/s of one training step: forward, cross-entropy, backward and an Adam step."""
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    x = torch.randn(batch, 3, image_size, image_size)
    y = torch.randint(0, model.config.num_classes, (batch,))
    steps = {}
    for impl in IMPLS + VARIANTS:
        net = build(impl, model, train=True)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step(net=net, opt=opt) -> None:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[impl] = step
    samples = interleaved(steps, rounds, 1)
    out = {}
    for k, v in samples.items():
        med = summarize(v)["median_ms"]
        out[k] = {
            "batch_size": batch,
            "threads": threads,
            "step_median_ms": med,
            "images_per_s": batch / (med / 1e3),
            "samples_ms": v,
        }
    return out


def memory_worker(impl: str, image_size: int, num_steps: int) -> dict[str, Any]:
    """Runs in a fresh subprocess: peak RSS of single-image inference of one implementation."""
    import naive_snntorch  # noqa: F401  - every worker imports the same modules
    import sj_model  # noqa: F401

    torch.set_num_threads(1)
    torch.manual_seed(0)
    # fresh weights: memory does not depend on them, and calibrating BatchNorm on a batch
    # would leave freed heap behind that later allocations reuse (hiding the peak)
    model = create("neurallnet", image_size=image_size, num_steps=num_steps).eval()
    net = build(impl, model)
    del model
    x = torch.randn(1, 3, image_size, image_size)
    trim_heap()
    with torch.inference_mode():
        return peak_rss_delta(lambda: net(x), calls=3)


def measure_memory(image_size: int, num_steps: int) -> dict[str, Any]:
    out = {}
    for impl in IMPLS:
        cmd = [
            sys.executable,
            __file__,
            "--memory-worker",
            impl,
            "--image-size",
            str(image_size),
            "--num-steps",
            str(num_steps),
        ]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"memory worker {impl} failed:\n{res.stderr[-2000:]}")
        out[impl] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


@torch.no_grad()
def check_outputs(model: NeurALLNet, models: dict, image_size: int) -> dict[str, Any]:
    """Logits of every implementation against the reference on 4 random images."""
    torch.manual_seed(2)
    x = torch.randn(4, 3, image_size, image_size)
    ref = model.eval()(x)
    out = {}
    for k, m in models.items():
        y = m(x)
        out[k] = {
            "max_abs_logit_diff": float((y - ref).abs().max()),
            "same_predictions": bool(torch.equal(y.argmax(1), ref.argmax(1))),
        }
    return out


# --------------------------------------------------------------------------- report


def verdicts(r: dict[str, Any]) -> list[dict[str, Any]]:
    lat = {k: v["median_ms"] for k, v in r["latency"]["1"].items()}
    tr = {k: v["images_per_s"] for k, v in r["training"].items()}
    mem = {k: v["rss_delta_mb"] for k, v in r["memory"].items()}
    eq = r["outputs"]["fast"]
    rows = [
        (
            "latency fast / SpikingJelly (1 thread)",
            lat["fast"] / lat["spikingjelly"],
            "<= 1/3",
            lat["fast"] / lat["spikingjelly"] <= 1 / 3,
        ),
        (
            "latency fast / snnTorch naive (1 thread)",
            lat["fast"] / lat["snntorch_naive"],
            "<= 1/3",
            lat["fast"] / lat["snntorch_naive"] <= 1 / 3,
        ),
        (
            "training throughput fast / SpikingJelly",
            tr["fast"] / tr["spikingjelly"],
            ">= 1.5",
            tr["fast"] / tr["spikingjelly"] >= 1.5,
        ),
        (
            "peak RSS delta fast - SpikingJelly (MB)",
            mem["fast"] - mem["spikingjelly"],
            "<= 0",
            mem["fast"] <= mem["spikingjelly"],
        ),
        (
            "peak RSS delta fast - snnTorch naive (MB)",
            mem["fast"] - mem["snntorch_naive"],
            "<= 0",
            mem["fast"] <= mem["snntorch_naive"],
        ),
        (
            "max |logit fast - reference|",
            eq["max_abs_logit_diff"],
            "<= 1e-5 and same argmax",
            eq["max_abs_logit_diff"] <= 1e-5 and eq["same_predictions"],
        ),
    ]
    return [{"check": c, "value": v, "target": t, "met": bool(ok)} for c, v, t, ok in rows]


def table_rows(r: dict[str, Any]) -> list[list[Any]]:
    rows = []
    t_hi = r["settings"]["threads_batch"]
    for k in IMPLS:
        lat1 = r["latency"]["1"][k]["median_ms"]
        lat2 = r["latency"].get(str(r["settings"]["threads_latency"][-1]), {}).get(k, {})
        rows.append(
            [
                LABELS[k],
                f"{lat1:.2f}",
                f"{lat2['median_ms']:.2f}" if lat2 else "-",
                f"{r['throughput'][k]['images_per_s']:.1f}",
                f"{r['training'][k]['images_per_s']:.2f}",
                f"{r['memory'][k]['rss_delta_mb']:.1f}",
                f"{r['memory'][k]['peak_rss_mb']:.1f}",
            ]
        )
    s = r["settings"]
    headers = [
        "implementation",
        "latency ms (1 thr)",
        f"latency ms ({s['threads_latency'][-1]} thr)",
        f"infer img/s (b{s['batch_size']}, {t_hi} thr)",
        f"train img/s (b{s['train_batch']}, {t_hi} thr)",
        "peak RSS +MB",
        "peak RSS MB",
    ]
    return [headers, *rows]


def design_rows(r: dict[str, Any]) -> list[list[Any]]:
    """The layout choice, measured: fast path with and without channels_last."""
    thr = [str(n) for n in r["settings"]["threads_latency"]]
    head = [
        "fast-path layout",
        *(f"latency ms ({n} thr)" for n in thr),
        f"train img/s ({r['settings']['threads_batch']} thr)",
    ]
    rows = [head]
    for k, name in (("fast", "channels_last (default on CPU)"), ("fast_nchw", "NCHW")):
        rows.append(
            [
                name,
                *(f"{r['latency'][n][k]['median_ms']:.2f}" for n in thr),
                f"{r['training'][k]['images_per_s']:.2f}",
            ]
        )
    return rows


def format_text(r: dict[str, Any]) -> str:
    from nalln.cli.common import format_table

    head, *rows = table_rows(r)
    lines = [format_table(rows, head, align="l" + "r" * (len(head) - 1)), ""]
    dhead, *drows = design_rows(r)
    lines += [format_table(drows, dhead, align="l" + "r" * (len(dhead) - 1)), ""]
    for v in r["verdicts"]:
        lines.append(
            f"{'MET ' if v['met'] else 'MISS'}  {v['check']}: {v['value']:.4g} "
            f"(target {v['target']})"
        )
    return "\n".join(lines)


def _md(text: str) -> str:
    """Escape a table cell's pipes."""
    return str(text).replace("|", "\\|")


def format_markdown(r: dict[str, Any]) -> str:
    head, *rows = table_rows(r)
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    dhead, *drows = design_rows(r)
    design = ["| " + " | ".join(dhead) + " |", "|" + "---|" * len(dhead)]
    design += ["| " + " | ".join(str(c) for c in row) + " |" for row in drows]
    s, h = r["settings"], r["host"]
    out = [
        f"Measured {r['date']} with `{r['command']}` "
        f"({s['image_size']}x{s['image_size']}, T = {s['num_steps']}; {h['cpu_model']}, "
        f"{h['logical_cpus']} logical CPUs, torch {h['torch']}, spikingjelly "
        f"{r['versions']['spikingjelly']}, snntorch {r['versions']['snntorch']}; load average "
        f"(1/5/15 min) {h['load_before']} before, {h['load_after']} after; shared machine).",
        "",
        *md,
        "",
        "| check | measured | target | met |",
        "|---|---|---|---|",
        *(
            f"| {_md(v['check'])} | {v['value']:.4g} | {_md(v['target'])} | "
            f"{'yes' if v['met'] else 'NO'} |"
            for v in r["verdicts"]
        ),
        "",
        "Layout of the fast path (same run):",
        "",
        *design,
        "",
        "Outputs against the reference (max |logit difference|, same predictions): "
        + "; ".join(
            f"{LABELS[k]} {v['max_abs_logit_diff']:.2g}, "
            f"{'same' if v['same_predictions'] else 'DIFFERENT'}"
            for k, v in r["outputs"].items()
        )
        + ".",
    ]
    return "\n".join(out)


def update_docs(markdown: str, doc: Path = DOC) -> None:
    from nalln.io import write_text

    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} lacks the {BEGIN} ... {END} markers")
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    write_text(doc, text[:a] + "\n" + markdown + "\n" + text[b:])


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--num-steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=30, help="timed single-image rounds")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16, help="batch for inference throughput")
    p.add_argument("--batch-rounds", type=int, default=5)
    p.add_argument("--train-batch", type=int, default=16, help="paper: 16")
    p.add_argument("--train-rounds", type=int, default=3)
    p.add_argument(
        "--threads-batch",
        type=int,
        default=available_cpus(),
        help="threads for throughput and training (default: all CPUs)",
    )
    p.add_argument("--out", default=str(HERE / "results" / "bench_speed.json"))
    p.add_argument("--update-docs", action="store_true", help="rewrite docs/benchmarks.md results")
    p.add_argument("--quick", action="store_true", help="smoke run: 64x64, few rounds")
    p.add_argument("--memory-worker", choices=IMPLS, help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.memory_worker:
        print(json.dumps(memory_worker(a.memory_worker, a.image_size, a.num_steps)))
        return 0
    if a.quick:
        a.image_size, a.rounds, a.warmup = 64, 5, 1
        a.batch_size, a.batch_rounds, a.train_batch, a.train_rounds = 4, 2, 4, 2
    import snntorch
    import spikingjelly

    command = "python benchmarks/bench_speed.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip()
    load_before = [round(x, 2) for x in os.getloadavg()]
    threads_latency = sorted({1, min(2, available_cpus())})
    model = calibrated_model(a.image_size, a.num_steps)
    models = {k: build(k, model) for k in IMPLS}
    variants = {k: build(k, model) for k in VARIANTS}
    r: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": command,
        "versions": {
            "torch": torch.__version__,
            "snntorch": snntorch.__version__,
            "spikingjelly": getattr(spikingjelly, "__version__", "2.0.0"),
        },
        "settings": {
            "image_size": a.image_size,
            "num_steps": a.num_steps,
            "rounds": a.rounds,
            "warmup": a.warmup,
            "batch_size": a.batch_size,
            "batch_rounds": a.batch_rounds,
            "train_batch": a.train_batch,
            "train_rounds": a.train_rounds,
            "threads_latency": threads_latency,
            "threads_batch": a.threads_batch,
        },
        "measurement": "measured: wall clock (time.perf_counter), interleaved rounds, medians; "
        "training step = forward + cross-entropy + backward + Adam step; memory = peak RSS above "
        "the RSS before 3 single-image inferences, each implementation in its own subprocess",
    }
    print(f"outputs ({a.image_size}x{a.image_size}) ...", file=sys.stderr)
    r["outputs"] = check_outputs(model, models | variants, a.image_size)
    x = torch.randn(1, 3, a.image_size, a.image_size)
    r["latency"] = {}
    for n in threads_latency:
        print(f"single-image latency, {n} thread(s) ...", file=sys.stderr)
        r["latency"][str(n)] = measure_latency(models | variants, x, n, a.rounds, a.warmup)
    print(f"batch-{a.batch_size} throughput ...", file=sys.stderr)
    xb = torch.randn(a.batch_size, 3, a.image_size, a.image_size)
    r["throughput"] = measure_throughput(models, xb, a.threads_batch, a.batch_rounds)
    print(f"training throughput (batch {a.train_batch}) ...", file=sys.stderr)
    r["training"] = measure_training(
        model, a.image_size, a.train_batch, a.threads_batch, a.train_rounds
    )
    print("peak memory (one subprocess per implementation) ...", file=sys.stderr)
    r["memory"] = measure_memory(a.image_size, a.num_steps)
    host = host_info()
    host["load_before"], host["load_after"] = load_before, [round(x, 2) for x in os.getloadavg()]
    r["host"] = host
    r["verdicts"] = verdicts(r)
    from nalln.io import write_json

    write_json(a.out, r)
    print(format_text(r))
    print(f"\nJSON: {a.out}")
    if a.update_docs:
        update_docs(format_markdown(r))
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
