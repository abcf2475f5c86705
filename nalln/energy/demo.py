"""The energy step of ``nalln demo``: a small report on a few images of the demo run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nalln.energy.render import write_report
from nalln.energy.report import ReportOptions, build_report, headline

DEMO_TARGETS = (
    "asic45-fp32",
    "asic45-int8",
    "loihi",
    "loihi2",
    "truenorth",
    "spinnaker2",
    "gpu-t4",
)


def run_demo_step(run: Path, data: Path, out: Path, progress: bool = False) -> dict[str, Any]:
    """Energy report for the demo model on 8 test images (all images if the split is smaller).

    Returns the output files, the counted totals and the headline energy / break-even rows.
    """
    t0 = time.perf_counter()
    opts = ReportOptions(targets=DEMO_TARGETS, n=8, split="test", batch_size=8)
    report = build_report(run, data, opts, progress=progress)
    files = write_report(report, out)
    rep = report.data
    return {
        "out": str(out),
        "files": {k: str(v) for k, v in files.items()},
        "synthetic": rep["synthetic"],
        "n_images": rep["source"]["n_images"],
        "totals": rep["snn"]["totals"],
        "ann_dense_macs": rep["ann"]["totals"]["dense_ops"],
        "energy": [
            {
                k: s[k]
                for k in (
                    "target",
                    "model",
                    "precision",
                    "snn_uj_low",
                    "snn_uj_high",
                    "baseline",
                    "baseline_uj_low",
                    "baseline_uj_high",
                    "outcome",
                    "snn_wins",
                    "verdict",
                )
            }
            for s in headline(rep["summary"])
        ],
        "seconds": time.perf_counter() - t0,
        "provenance": "counts: counted on the images; energies: estimated from cited constants",
    }
