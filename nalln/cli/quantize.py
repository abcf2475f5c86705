"""``nalln quantize``: INT8 post-training quantisation of the weights (per-channel, symmetric)
into a new run folder that evaluate, predict and profile load like any other; reports the size
and the accuracy change on the test split."""

from __future__ import annotations

import argparse

from nalln.cli import common as cc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="INT8 weight quantisation of a run", description=__doc__)
    cc.add_input(p, "run", help="run folder")
    cc.add_output(p, "--out", kind="folder", help="new run folder (default RUN-int8 beside RUN)")
    cc.add_input(p, "--data", help="data-set root (default: the one the run was trained on)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--no-compare", action="store_true", help="skip the accuracy comparison")
    p.add_argument(
        "--keep-float",
        default="",
        metavar="LAYERS",
        help="comma-separated Conv2d/Linear module names to leave in float32 (e.g. stem.conv)",
    )
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help="also measure each weight quantised alone (one evaluation per layer)",
    )
    p.add_argument("--n-resamples", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--device", default="cpu")
    cc.add_json_flag(p, "quantization.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nalln.analysis.quantization import quantize_run

    res = quantize_run(
        args.run,
        args.out,
        checkpoint=args.checkpoint,
        data=args.data,
        split=args.split,
        compare=not args.no_compare,
        keep_float=[k.strip() for k in args.keep_float.split(",") if k.strip()],
        sensitivity=args.sensitivity,
        n_resamples=args.n_resamples,
        device=args.device,
    )
    if cc.json_or_banner(args, res.data, res.data["synthetic"]):
        return 0
    print((res.out / "quantization.md").read_text(), end="")
    print(f"quantised run: {res.out} (use it with nalln evaluate / predict / profile)")
    return 0
