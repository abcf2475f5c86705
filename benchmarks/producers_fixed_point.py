"""Loihi fixed point on the producer fixtures: the table in docs/conversion.md ("Producers").

For every fixture in tests/fixtures/producers/, with the semantic flags fixtures.json lists,
``simulate`` on the bit-exact emulator (all 4 inputs) and on Lava fixed point (the first 2),
calibrated on the fixture's own inputs; prints one markdown row per fixture: overall and
per-layer spike agreement with the float reference, and the output entries that differ from
the producer's own spikes, and whether Lava's spikes equal the emulator's on the same plan.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python benchmarks/producers_fixed_point.py

1.5-3 minutes on 2 shared cores (measured).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from nalln.conversion.semantics import Choices
from nalln.conversion.simulate import simulate

HERE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "producers"


def measure(name: str, semantics: dict, backend: str, n: int | None) -> str:
    with np.load(HERE / f"{name}.npz") as f:
        spikes, steps = f["spikes"], int(f["steps"])
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
    per = ", ".join(f"{v:.3f}" for v in sa["per_layer"].values())
    want = spikes[: got.shape[0]]
    row = f"{sa['overall']:.4f} ({per}) | {int((got != want).sum())} of {want.size}"
    if backend == "lava":  # the same plan on the emulator, spike for spike
        row += f" | {res.metrics['fixed_point']['lava_matches_emulator_bit_exactly']}"
    return row


def main() -> None:
    listing = json.loads((HERE / "fixtures.json").read_text())
    print(
        "| fixture | emulator (4 inputs) | output differs | Lava fixed (2) | output differs "
        "| Lava == emulator |"
    )
    print("|---|---|---|---|---|---|")
    for name in sorted(listing):
        sem = listing[name]["semantics"]
        emu = measure(name, sem, "loihi-emulator", None)
        lava = measure(name, sem, "lava", 2)
        print(f"| `{name}` | {emu} | {lava} |", flush=True)


if __name__ == "__main__":
    main()
