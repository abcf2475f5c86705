"""The fixed-point step of ``nalln demo``: fine-tune onto Loihi's grid, then Lava in fixed point."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nalln.conversion.demo import DEMO_IMAGES
from nalln.conversion.simulate import simulate
from nalln.deploy.finetune_fixed_point import run_demo_step as finetune_step


def run_fixed_point_demo_step(run: Path, data: Path, out: Path, progress: bool) -> dict[str, Any]:
    """Fine-tune the demo run onto Loihi's fixed-point grid (static SE; nalln finetune-fixed-point)
    and run ``DEMO_IMAGES`` test images through Lava in fixed point against it."""
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
