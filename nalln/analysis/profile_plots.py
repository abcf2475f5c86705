"""PNG figures of a hardware profile: latency histogram and throughput against batch size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from nalln.evaluation.plots import stamp_provenance
from nalln.io import save_figure


def _label(entry: dict[str, Any]) -> str:
    if entry["device"] == "cuda":
        return "CUDA"
    n = entry["threads"]
    return f"CPU, {n} thread" + ("s" if n != 1 else "")


def plot_latency_histogram(summary: dict[str, Any], path: str | Path, synthetic: bool) -> Path:
    """One histogram per device/thread setting (own panel: CPU and GPU differ ~100x)."""
    lats = summary["latency"]
    fig, axes = plt.subplots(1, len(lats), figsize=(4.2 * len(lats), 3.4), squeeze=False)
    for ax, lat in zip(axes[0], lats, strict=True):
        ax.hist(
            lat["samples_ms"],
            bins=min(30, max(5, len(lat["samples_ms"]) // 2)),
            color="tab:blue",
            alpha=0.8,
        )
        ax.axvline(
            lat["median_ms"], color="crimson", ls="--", label=f"median {lat['median_ms']:.2f} ms"
        )
        ax.set(xlabel="single-image latency (ms, measured)", ylabel="runs", title=_label(lat))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{summary['implementation']} path, {summary['image_size']}x{summary['image_size']}, "
        f"T = {summary['num_steps']}",
        fontsize=10,
    )
    fig.tight_layout()
    stamp_provenance(fig, synthetic)
    return save_figure(fig, path)


def plot_throughput(summary: dict[str, Any], path: str | Path, synthetic: bool) -> Path:
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    series: dict[str, list[tuple[int, float]]] = {}
    for t in summary["throughput"]:
        series.setdefault(_label(t), []).append((t["batch_size"], t["images_per_s"]))
    for label, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set(
        xlabel="batch size",
        ylabel="images / s (measured)",
        title=f"Throughput, {summary['implementation']} path",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    stamp_provenance(fig, synthetic)
    return save_figure(fig, path)
