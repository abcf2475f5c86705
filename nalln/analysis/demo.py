"""The analysis step of ``nalln demo``: robustness, Grad-CAM, INT8 and the HTML report.

Run it after the other steps so that the report gathers their outputs too (it looks in the run
folder, in ``out`` and beside the run, where the demo writes ``eval-test/``, ``energy/`` ...).
Measured 36 s for the 64x64 demo model (200 test images) with one thread on a shared, loaded
2-core machine (docs/analysis.md); the ablation study (five trainings) is left to
``nalln ablate``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nalln.analysis.gradcam_report import run_gradcam
from nalln.analysis.quantization import quantize_run
from nalln.analysis.report_html import build_report
from nalln.analysis.robustness import RobustnessSpec, robustness

# fewer severities than the command's defaults (19 evaluations instead of 32), same range
DEMO_GRIDS: dict[str, tuple[float, ...]] = {
    "noise": (0.0, 0.01, 0.05, 0.1),
    "salt_pepper": (0.0, 0.01, 0.05, 0.1),
    "blur": (0.0, 1.0, 2.0, 3.0),
    "occlusion": (0.0, 0.1, 0.25, 0.4),
    "rotation": (-20.0, 0.0, 20.0),
    "brightness": (-0.5, -0.25, 0.0, 0.25, 0.5),
}


def _at(rows: list[dict[str, Any]], name: str, severity: float) -> float | None:
    return next(
        (r["accuracy"] for r in rows if r["perturbation"] == name and r["severity"] == severity),
        None,
    )


def run_demo_step(run: Path, data: Path, out: Path, progress: bool = False) -> dict[str, Any]:
    """Robustness sweep (:data:`DEMO_GRIDS`, test split), Grad-CAM grid (3 per class), INT8 copy of
    the run, and ``out/report.html``; returns the files and headline numbers."""
    t0 = time.perf_counter()
    run, out = Path(run), Path(out)
    rob = robustness(
        run,
        data,
        spec=RobustnessSpec(grids=DEMO_GRIDS),
        out=out / "robustness",
        device="cpu",
        progress=progress,
    )
    cam = run_gradcam(run, per_class=3, data=data, out=out / "gradcam", layer="auto")
    int8_dir = out / f"{run.name}-int8"
    if (int8_dir / "checkpoints" / "best.safetensors").is_file():
        import shutil

        shutil.rmtree(int8_dir)  # a re-run of the step replaces its own output
    quant = quantize_run(run, int8_dir, data=data, n_resamples=2000, progress=progress)
    rep = build_report(run, out / "report.html", search=[out, run.parent])
    clean = next(iter(rob.data["clean_accuracy"].values()))
    acc = quant.data.get("accuracy", {})
    return {
        "out": str(out),
        "synthetic": rob.data["synthetic"],
        "robustness": {
            "files": {k: str(v) for k, v in rob.files.items()},
            "clean_accuracy": clean,
            "brightness_-0.25": _at(rob.rows, "brightness", -0.25),
            "brightness_+0.25": _at(rob.rows, "brightness", 0.25),
            "noise_variance_0.01": _at(rob.rows, "noise", 0.01),
        },
        "gradcam": {"layer": cam.data["layer"], "grid": str(cam.files.get("gradcam_grid.png"))},
        "int8": {
            "run": str(int8_dir),
            "size_ratio": quant.data["size"]["state_ratio"],
            "fp32_accuracy": acc.get("fp32", {}).get("accuracy"),
            "int8_accuracy": acc.get("int8", {}).get("accuracy"),
            "prediction_agreement": acc.get("prediction_agreement"),
        },
        "report": str(rep.path),
        "provenance": "accuracies measured on the SYNTHETIC test split; sizes counted",
        "seconds": time.perf_counter() - t0,
    }
