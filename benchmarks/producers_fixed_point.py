"""Loihi fixed point on the producer fixtures: the table in docs/conversion.md ("Producers").

For every fixture in tests/fixtures/producers/, with the semantic flags fixtures.json lists,
``simulate`` on the bit-exact emulator (all 4 inputs) and on Lava fixed point (the first 2),
calibrated on the fixture's own inputs; prints one markdown row per fixture: overall and
per-layer spike agreement with the float reference, and the output entries that differ from
the producer's own spikes (a graded readout, ``"output": "membrane"``: the largest difference
from the producer's membrane relative to its peak), and whether Lava's spikes equal the
emulator's on the same plan. Writes the rows as JSON (default
``benchmarks/results/producers_fixed_point.json``).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python benchmarks/producers_fixed_point.py \
        [--json OUT]

1.5-3 minutes on 2 shared cores (measured).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from nalln.conversion.semantics import Choices
from nalln.conversion.simulate import simulate
from nalln.io import write_json

HERE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "producers"


def measure(name: str, semantics: dict, backend: str, n: int | None) -> dict:
    """One back-end's figures on one fixture (measured)."""
    with np.load(HERE / f"{name}.npz") as f:
        want, steps = (f["outputs"] if "outputs" in f else f["spikes"]), int(f["steps"])
    with tempfile.TemporaryDirectory() as tmp:
        res = simulate(
            HERE / f"{name}.nir",
            backend=backend,
            fixed_point=backend == "lava",
            inputs=HERE / f"{name}.npz",
            steps=steps,
            n=n,
            out=Path(tmp) / "s",
            choices=Choices.parse(**semantics),
            progress=False,
        )
        with np.load(Path(tmp) / "s" / "outputs.npz") as f:
            got = f["backend"]
    sa = res.metrics["spike_agreement"]
    want = want[: got.shape[0]]
    row = {"overall": sa["overall"], "per_layer": sa["per_layer"], "inputs": int(got.shape[0])}
    if "outputs" in np.load(HERE / f"{name}.npz").files:  # a graded readout: its membrane
        peak = float(np.abs(want).max()) or 1.0
        row["output_max_relative_difference"] = float(np.abs(got - want).max()) / peak
    else:
        row["output_differs"] = [int((got != want).sum()), int(want.size)]
    if backend == "lava":  # the same plan on the emulator, spike for spike
        row["lava_equals_emulator"] = res.metrics["fixed_point"][
            "lava_matches_emulator_bit_exactly"
        ]
    return row


def cells(row: dict) -> str:
    per = ", ".join(f"{v:.3f}" for v in row["per_layer"].values())
    if "output_differs" in row:
        out = "{} of {}".format(*row["output_differs"])
    else:
        out = f"membrane {100 * row['output_max_relative_difference']:.2f} % of peak"
    text = f"{row['overall']:.4f} ({per}) | {out}"
    return text + (f" | {row['lava_equals_emulator']}" if "lava_equals_emulator" in row else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).parent / "results" / "producers_fixed_point.json",
    )
    args = ap.parse_args()
    listing = json.loads((HERE / "fixtures.json").read_text())
    rows = {}
    print(
        "| fixture | emulator (4 inputs) | output differs | Lava fixed (2) | output differs "
        "| Lava == emulator |"
    )
    print("|---|---|---|---|---|---|")
    for name in sorted(listing):
        sem = listing[name]["semantics"]
        emu = measure(name, sem, "loihi-emulator", None)
        lava = measure(name, sem, "lava", 2)
        rows[name] = {"emulator": emu, "lava_fixed_point": lava}
        print(f"| `{name}` | {cells(emu)} | {cells(lava)} |", flush=True)
    write_json(args.json, {"source": "measured", "command": " ".join(sys.argv), "fixtures": rows})
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
