"""``nalln profile``: parameters, FP32 size, latency distribution, throughput and peak memory.

Without RUN it profiles a freshly initialised model of the given configuration (dense speed
does not depend on the weights): ``nalln profile --image-size 224 --threads 1 --json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nalln.cli import common as cc

MODEL_FLAGS = {
    "--image-size": ("image_size", int, "input side in pixels (default 224)"),
    "--num-steps": ("num_steps", int, "time steps T (default 4)"),
    "--width-multiplier": ("width_multiplier", float, "scales every width (default 1.0)"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="measure size, latency, throughput and memory of a model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cc.add_input(p, "run", nargs="?", help="run folder or checkpoint (omit: a fresh model)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--model", help="registered model name for a fresh model (default neurallnet)")
    for flag, (_, typ, help_) in MODEL_FLAGS.items():
        p.add_argument(flag, type=typ, help=help_ + "; only without RUN")
    p.add_argument(
        "--threads",
        default="1,all",
        help="CPU thread counts for single-image latency, e.g. 1 or 1,all (default 1,all); "
        "throughput and memory use the largest",
    )
    p.add_argument("--repeats", type=int, default=30, help="timed single-image runs (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up runs (default 3)")
    p.add_argument(
        "--batch-sizes", default="1,2,4,8,16", help="batch sizes for throughput (default 1..16)"
    )
    p.add_argument("--batch-repeats", type=int, default=3, help="timed runs per batch size")
    p.add_argument(
        "--path",
        default="fast",
        choices=("fast", "reference"),
        help="inference implementation: fast (BN folded, default) or the reference model",
    )
    p.add_argument("--no-cuda", action="store_true", help="skip CUDA even when a GPU is present")
    cc.add_output(
        p,
        "--out",
        kind="folder",
        help="output folder (default RUN/profile; none for a fresh model)",
    )
    cc.add_json_flag(p, "profile.json")
    cc.add_progress_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nalln.analysis.profiling import (
        PROFILE_TABLE_HEADERS,
        ProfileSpec,
        parse_sizes,
        parse_threads,
        profile,
        profile_rows,
    )

    overrides = {}
    for flag, (key, _, _) in MODEL_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides[key] = value
    spec = ProfileSpec(
        threads=parse_threads(args.threads),
        repeats=args.repeats,
        warmup=args.warmup,
        batch_sizes=parse_sizes(args.batch_sizes),
        batch_repeats=args.batch_repeats,
        implementation=args.path,
        cuda=not args.no_cuda,
    )
    res = profile(
        args.run,
        which=args.checkpoint,
        model_name=args.model or "neurallnet",
        overrides=overrides,
        spec=spec,
        out=args.out,
        progress=cc.show_progress(args),
    )
    s = res.summary
    if cc.json_or_banner(args, s, bool(s["source"]["synthetic"])):
        return 0
    src = s["source"]
    print(
        f"{src['model_name']} ({src['weights']}), {s['image_size']}x{s['image_size']}, "
        f"T = {s['num_steps']}, {s['implementation']} path"
    )
    print(
        f"parameters {s['parameters']:,} (counted); FP32 size {s['fp32_size_mb']:.2f} MB "
        f"(parameters x 4 bytes)"
    )
    print(cc.format_table(profile_rows(s), PROFILE_TABLE_HEADERS))
    mem = s["memory"]["cpu"]
    line = (
        f"peak memory (measured): CPU RSS +{mem['rss_delta_mb']:.1f} MB during single-image "
        f"inference (peak {mem['peak_rss_mb']:.1f} MB)"
    )
    if s["memory"].get("cuda"):
        line += f"; CUDA peak allocated {s['memory']['cuda']['peak_allocated_mb']:.1f} MB"
    print(line)
    print("latency: wall clock after warm-up, random input; decoding/preprocessing excluded")
    if res.files:
        paths = [Path(p) for p in res.files.values()]
        print(f"files in {paths[0].parent}: " + ", ".join(sorted(p.name for p in paths)))
    return 0
