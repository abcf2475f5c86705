"""The fixed-point step of ``nalln demo``: fine-tune onto Loihi's grid, then Lava in fixed point."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nalln.conversion.demo import DEMO_IMAGES, headline
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
    emu = simulate(
        tuned["run"],
        backend="loihi-emulator",
        se="static",
        data=data,
        out=out / "simulate-loihi-emulator",
        progress=progress,
    ).metrics
    test = tuned.get("accuracy") or {}
    ci = tuned.get("accuracy_ci95") or {}
    return {
        "finetune": {k: v for k, v in tuned.items() if k not in ("seconds", "synthetic")},
        "float_accuracy": test.get("original_model"),
        "float_accuracy_ci95": ci.get("original_model"),
        "deployed_accuracy": emu["accuracy"],
        "deployed_accuracy_ci95": emu["accuracy_ci95"],
        "deployed_images": emu["images"],
        "deployed_backend": "loihi-emulator: bit-exact Loihi 2 fixed point, whole test split",
        "lava_top1_agreement": m["top1_agreement"],
        "lava_fixed_point": headline(res),
        "emulator": {
            "report": str(out / "simulate-loihi-emulator" / "report.json"),
            "top1_agreement_vs_finetuned_float": emu["top1_agreement"],
            "seconds_per_image": emu["seconds_per_image"],
            "speedup_vs_lava": m["seconds_per_image"] / max(emu["seconds_per_image"], 1e-12),
        },
        "seconds": time.perf_counter() - t0,
        "synthetic": res.metrics.get("synthetic", True),
        "provenance": "measured in this run: float accuracy = the source run on its whole test "
        "split; deployed accuracy = the fine-tuned run on Loihi 2's integer arithmetic (the "
        "bit-exact emulator) on the same split; Lava (CPU simulation) against the fine-tuned "
        "float model on the first images",
    }
