"""PNG figures of the energy report (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from nalln.evaluation.plots import stamp_provenance
from nalln.io import save_figure


def _short(name: str) -> str:
    return name.replace("stages.", "s").replace(".conv", "").replace("refine.", "ref.")


def plot_energy_per_layer(
    groups: Sequence[str],
    series: dict[str, dict[str, dict[str, float]]],
    baselines: dict[str, dict[str, dict[str, float]]],
    path: str | Path,
    synthetic: bool,
    preferred_baseline: str | None = None,
) -> Path:
    """One panel per energy model: SNN energy per layer group for each target (bars, log
    scale), one conventional baseline of that model as black markers."""
    models = [m for m in series if series[m]]
    fig, axes = plt.subplots(
        len(models), 1, figsize=(max(9, 0.55 * len(groups) + 3), 3.4 * len(models)), squeeze=False
    )
    x = np.arange(len(groups))
    for ax, model in zip(axes[:, 0], models, strict=True):
        targets = list(series[model])
        width = 0.8 / max(1, len(targets))
        top = 0.0
        for i, t in enumerate(targets):
            vals = [series[model][t].get(g, 0.0) / 1e6 for g in groups]
            top = max(top, *vals)
            ax.bar(x - 0.4 + width * (i + 0.5), vals, width, label=t)
        bases = baselines.get(model, {})
        label = preferred_baseline if preferred_baseline in bases else next(iter(bases), None)
        if label is not None:
            vals = [bases[label].get(g, 0.0) / 1e6 for g in groups]
            ax.plot(x, vals, "k_", ms=14, mew=2, label=f"ANN twin on {label}")
            top = max(top, *vals)
        ax.set_yscale("log", nonpositive="clip")
        if top > 0:
            ax.set_ylim(top * 1e-7, top * 3)
        ax.set_ylabel("energy per inference (uJ)")
        ax.set_title(f"model: {model} (estimated from cited constants)")
        ax.set_xticks(x, [_short(g) for g in groups], rotation=60, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    stamp_provenance(fig, synthetic)
    return save_figure(fig, path)


def plot_sops_vs_macs(
    groups: Sequence[str],
    snn_acs: Sequence[float],
    snn_macs: Sequence[float],
    ann_macs: Sequence[float],
    path: str | Path,
    synthetic: bool,
) -> Path:
    """Counted per layer: the SNN's synaptic ACs and MACs against the ANN twin's dense MACs."""
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(9, 0.55 * len(groups) + 3), 4.2))
    w = 0.27
    ax.bar(x - w, snn_acs, w, label="SNN synaptic ACs (binary input)")
    ax.bar(x, snn_macs, w, label="SNN MACs (analog input)")
    ax.bar(x + w, ann_macs, w, label="ANN twin dense MACs (T=1)")
    ax.set_yscale("log", nonpositive="clip")
    ax.set_ylim(bottom=0.5)
    ax.set_ylabel("operations per inference (counted)")
    ax.set_xticks(x, [_short(g) for g in groups], rotation=60, ha="right", fontsize=8)
    ax.set_title("Synaptic operations per layer, summed over T (NeuroBench rules)")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    stamp_provenance(fig, synthetic)
    return save_figure(fig, path)


def plot_firing_rates(
    names: Sequence[str],
    rates: Sequence[float],
    per_step: Sequence[Sequence[float]],
    path: str | Path,
    synthetic: bool,
) -> Path:
    """Mean firing rate of every LIF population, with its value at each time step."""
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(names) + 3), 4.0))
    ax.bar(x, rates, color="tab:orange", alpha=0.6, label="mean over steps")
    steps = np.array(per_step)
    if steps.size:
        for t in range(steps.shape[1]):
            ax.plot(x, steps[:, t], "o", ms=4, label=f"step {t}")
    ax.set_ylabel("spikes per neuron per step (counted)")
    ax.set_xticks(x, [_short(n) for n in names], rotation=60, ha="right", fontsize=8)
    ax.set_title("Firing rate per layer")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    stamp_provenance(fig, synthetic)
    return save_figure(fig, path)
