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

NO_VERDICT = (
    "No matched SNN vs ANN comparison for the requested targets and models\n"
    "(a neuromorphic chip is compared only under ops+memory)"
)


def _short(name: str) -> str:
    return name.replace("stages.", "s").replace(".conv", "").replace("refine.", "ref.")


def _grid_below(ax: plt.Axes, axis: str = "y") -> None:
    """Major grid lines only, drawn under the bars."""
    ax.set_axisbelow(True)
    ax.grid(axis=axis, which="major", alpha=0.3)
    ax.grid(axis=axis, which="minor", visible=False)


def _finish(fig: plt.Figure, synthetic: bool) -> None:
    """Lay out with a strip at the bottom kept free for the SYNTHETIC stamp."""
    strip = min(0.08, 0.3 / fig.get_figheight()) if synthetic else 0.0
    fig.tight_layout(rect=(0, strip, 1, 1))
    stamp_provenance(fig, synthetic)


def _message_figure(text: str, path: str | Path, synthetic: bool) -> Path:
    """A figure that only says why there is nothing to plot."""
    fig, ax = plt.subplots(figsize=(9, 2.2))
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10)
    _finish(fig, synthetic)
    return save_figure(fig, path)


def plot_headline(verdicts: Sequence[dict], path: str | Path, synthetic: bool) -> Path:
    """Energy per inference per target, SNN vs ANN under matched models, as ranges (one row
    per verdict). A bar spans a side's low - high ends; a lower bound only is a marker with
    an arrow pointing up the scale."""
    n = len(verdicts)
    if not n:  # e.g. only chips under 'ops' were asked for: say so, draw no empty axes
        return _message_figure(NO_VERDICT, path, synthetic)
    fig, ax = plt.subplots(figsize=(11, 0.42 * n + 1.8))
    y = np.arange(n)[::-1]
    colours = {"snn": "tab:blue", "ann": "tab:gray"}
    for yi, v in zip(y, verdicts, strict=True):
        for side, dy in (("snn", 0.16), ("ann", -0.16)):
            lo = v[f"{'snn' if side == 'snn' else 'baseline'}_uj_low"]
            hi = v[f"{'snn' if side == 'snn' else 'baseline'}_uj_high"]
            c = colours[side]
            if hi is None:
                ax.plot([lo], [yi + dy], ">", color=c, ms=7)
            elif hi <= lo * (1 + 1e-9):
                ax.plot([lo], [yi + dy], "o", color=c, ms=6, mec="k")
            else:
                ax.plot([lo, hi], [yi + dy, yi + dy], "-", color=c, lw=6, solid_capstyle="butt")
                ax.plot([lo, hi], [yi + dy, yi + dy], "|", color="k", ms=8)
    labels = [
        f"{v['target']}{' (proxy)' if v.get('proxy') else ''} / {v['model']}"
        + (f" {v['precision']}" if v.get("precision") else "")
        + f" vs {v['baseline'].removeprefix('ANN on ')}"
        + f"  [{v['outcome']}; cheap ends {v['ratio_best']:.2g}x]"
        for v in verdicts
    ]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference (uJ, estimated from cited constants)")
    ax.set_title("SNN vs ANN under matched cost models (bars: low - high end of each side)")
    _grid_below(ax, "x")
    handles = [
        plt.Line2D([], [], color=colours["snn"], lw=6, label="SNN"),
        plt.Line2D([], [], color=colours["ann"], lw=6, label="ANN twin"),
        plt.Line2D([], [], color="k", marker=">", ls="", label="lower bound only"),
        plt.Line2D([], [], color="w", mec="k", marker="o", ls="", label="one value"),
    ]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_ylim(-0.6, n - 0.4)
    _finish(fig, synthetic)
    return save_figure(fig, path)


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
    if not models:  # nothing with a matched baseline to draw: say so, no empty axes
        return _message_figure(NO_VERDICT, path, synthetic)
    fig, axes = plt.subplots(
        len(models), 1, figsize=(max(11, 0.55 * len(groups) + 5), 3.4 * len(models)), squeeze=False
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
        label = next((b for b in bases if b.split(" ")[0] == preferred_baseline), None)
        label = label or next(iter(bases), None)
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
        _grid_below(ax)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _finish(fig, synthetic)
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
    _grid_below(ax)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _finish(fig, synthetic)
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
    _grid_below(ax)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _finish(fig, synthetic)
    return save_figure(fig, path)
