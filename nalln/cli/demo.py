"""``nalln demo``: synthetic data -> train -> evaluate -> later stages, printing every output."""

from __future__ import annotations

import argparse
import json

from nalln.cli.common import add_output, add_progress_flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on built-in SYNTHETIC data")
    add_output(
        p, "--out", kind="folder", default="runs/demo", help="output folder (default runs/demo)"
    )
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run (tiny data)")
    p.add_argument("--n-per-class", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--epochs", type=int)
    add_progress_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from nalln.cli.common import show_progress, synthetic_banner
    from nalln.demo import QUICK, DemoSpec, run_demo

    spec = QUICK if args.quick else DemoSpec()
    changes = {
        k: v
        for k, v in (
            ("n_per_class", args.n_per_class),
            ("image_size", args.image_size),
            ("epochs", args.epochs),
        )
        if v is not None
    }
    spec = dataclasses.replace(spec, **changes)
    args.interrupt_hint = "the demo stopped; remove the output folder and run it again"
    summary = run_demo(args.out, spec, progress=show_progress(args))
    print()
    print(synthetic_banner(True), end="")
    print(
        f"demo finished in {summary['seconds']} s (measured); test accuracy "
        f"{summary['accuracy']:.4f}, 95% CI {summary['accuracy_ci'][0]:.4f}-"
        f"{summary['accuracy_ci'][1]:.4f} (measured, percentile bootstrap)"
    )
    print(
        "outputs (numbers: measured on SYNTHETIC data, counted, or estimated as each report says):"
    )
    for step, res in summary["steps"].items():
        print(f"  {step} ({res['seconds']} s):")
        for key, value in _headline(res):
            print(f"    {key}: {value}")
    print(f"  summary: {args.out}/demo.json")
    return 0


_SKIP = {"seconds", "synthetic", "provenance", "files", "spec"}


def _headline(res: dict, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """Paths and scalar results of a step summary, nested keys dotted (two levels at most)."""
    out: list[tuple[str, str]] = []
    for key, value in res.items():
        if key in _SKIP:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict) and depth < 1:
            out += _headline(value, f"{name}.", depth + 1)
        elif isinstance(value, float):
            out.append((name, f"{value:.4g}"))
        elif isinstance(value, str | int | bool):
            out.append((name, str(value)))
        elif (
            isinstance(value, list)
            and len(value) <= 4
            and all(isinstance(v, int | float) for v in value)
        ):
            out.append((name, json.dumps([round(v, 4) for v in value])))
    return out
