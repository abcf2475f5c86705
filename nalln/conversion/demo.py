"""The conversion step of ``nalln demo``: export to NIR, then simulate on Norse and on Lava.

The fixed-point step (fine-tune, then Lava in fixed point) is :mod:`nalln.deploy.demo`.

Budget: <= 90 s for the 64x64 demo model on two cores (measured in docs/conversion.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nalln.conversion.convert import convert
from nalln.conversion.simulate import SimulationResult, simulate

DEMO_IMAGES = 16


def headline(res: SimulationResult) -> dict[str, Any]:
    """The numbers ``nalln demo`` shows of one simulation, and where its report is."""
    m = res.metrics
    return {
        "report": str(res.out / "report.json"),
        "images": m["images"],
        "top1_agreement": m["top1_agreement"],
        "spike_agreement": m["spike_agreement"]["overall"],
        "accuracy": m["accuracy"],
        "seconds_per_image": m["seconds_per_image"],
    }


def run_demo_step(run: Path, data: Path, out: Path, progress: bool) -> dict[str, Any]:
    """Convert the demo run to NIR (hybrid SE) and simulate ``DEMO_IMAGES`` test images on Norse
    and on Lava (float). Returns output paths and the measured headline numbers."""
    out = Path(out)
    t0 = time.perf_counter()
    conv = convert(run, to="nir", out=out / "nir", se="hybrid", data=data, progress=progress)
    summary: dict[str, Any] = {
        "nir": str(conv.out),
        "nir_round_trip": conv.summary["nir_round_trip"],
        "synthetic": conv.summary["synthetic"],
    }
    for backend in ("norse", "lava"):
        res = simulate(
            run,
            backend=backend,
            se="hybrid",
            data=data,
            n=DEMO_IMAGES,
            out=out / f"simulate-{backend}",
            progress=progress,
        )
        summary[backend] = headline(res)
    summary["seconds"] = time.perf_counter() - t0
    summary["provenance"] = "measured in this run (wall-clock, CPU)"
    return summary
