"""The conversion step of ``nalln demo``: export to NIR, then simulate on Norse and on Lava.

Budget: <= 90 s for the 64x64 demo model on two cores (measured in docs/conversion.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nalln.conversion.convert import convert
from nalln.conversion.simulate import simulate

DEMO_IMAGES = 16


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
        m = res.metrics
        summary[backend] = {
            "report": str(res.out / "report.json"),
            "images": m["images"],
            "top1_agreement": m["top1_agreement"],
            "spike_agreement": m["spike_agreement"]["overall"],
            "accuracy": m["accuracy"],
            "seconds_per_image": m["seconds_per_image"],
        }
    summary["seconds"] = time.perf_counter() - t0
    summary["provenance"] = "measured in this run (wall-clock, CPU)"
    return summary


def run_fixed_point_demo_step(run: Path, data: Path, out: Path, progress: bool) -> dict[str, Any]:
    """Fine-tune the demo run onto Loihi's fixed-point grid (static SE; nalln finetune-fixed-point)
    and run ``DEMO_IMAGES`` test images through Lava in fixed point against it."""
    from nalln.training.finetune_fixed_point import run_demo_step as finetune_step

    out = Path(out)
    t0 = time.perf_counter()
    tuned = finetune_step(run, data, out / "run-fixed-point", progress)
    res = simulate(
        tuned["run"],
        backend="lava",
        se="static",
        fixed_point=True,
        data=data,
        n=DEMO_IMAGES,
        out=out / "simulate-lava-fixed",
        progress=progress,
    )
    m = res.metrics
    return {
        "finetune": {k: v for k, v in tuned.items() if k not in ("seconds", "synthetic")},
        "lava_fixed_point": {
            "report": str(res.out / "report.json"),
            "images": m["images"],
            "top1_agreement": m["top1_agreement"],
            "spike_agreement": m["spike_agreement"]["overall"],
            "accuracy": m["accuracy"],
            "seconds_per_image": m["seconds_per_image"],
        },
        "seconds": time.perf_counter() - t0,
        "synthetic": res.metrics.get("synthetic", True),
        "provenance": "measured in this run: Lava (Loihi 2 fixed point, CPU simulation) against "
        "the fine-tuned float model",
    }
