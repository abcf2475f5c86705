"""Where does a float run lose accuracy on Loihi 2's fixed point? (docs/conversion.md)

Per-layer sensitivity (one layer on the grid, the rest float), flip propagation per layer and
step, per-channel weight resolution, and the chain trained -> start (folded) -> on the grid, all
on the run's test split with the fake-quantised network (which equals the chip's arithmetic).

    python benchmarks/diagnose_fixed_point.py RUN [--data ROOT] [--se static|hybrid] [--json OUT]

Prints tables and writes JSON (default ``benchmarks/results/diagnose_fixed_point.json``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nalln.deploy.diagnose import diagnose
from nalln.io import write_json
from nalln.ir.se_mode import SEMode
from nalln.textfmt import format_table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data")
    ap.add_argument("--se", type=SEMode, choices=SEMode.deployable(), default=SEMode.STATIC)
    ap.add_argument("--calibration", type=int, default=64)
    ap.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results/diagnose_fixed_point.json"
    )
    args = ap.parse_args()
    d = diagnose(args.run, args.data, se=args.se, calibration=args.calibration, progress=True)
    tag = "SYNTHETIC data - " if d["synthetic"] else ""
    print(f"{tag}{d['test_images']} test images, SE: {d['se']}")
    print(format_table([[k, v] for k, v in d["accuracy"].items()], ["model", "accuracy"], "lr"))
    res = d["channel_resolution"]
    flips = d["spike_agreement_per_layer_and_step"]
    rows = []
    for name, s in d["sensitivity_one_layer_on_grid"].items():
        r = res.get(name, {})
        f = flips.get(name)
        rows.append(
            [
                name,
                s["accuracy"],
                s["top1_agreement_vs_float"],
                r.get("median_bits", ""),
                r.get("min_bits", ""),
                "" if f is None else " ".join(f"{v:.4f}" for v in f),
            ]
        )
    head = ["layer alone on grid", "accuracy", "top-1 vs float", "median bits", "min bits"]
    print(format_table(rows, [*head, "spike agreement per step (all on grid)"], "lrrrrl"))
    write_json(args.json, d)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
