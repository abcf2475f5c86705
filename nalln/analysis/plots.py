"""PNG figures of the analyses (matplotlib, headless); synthetic results carry a red tag."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from nalln.evaluation.plots import SYNTHETIC_TAG
from nalln.io import save_figure
from nalln.provenance import Origin

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def tag_synthetic(fig: plt.Figure, synthetic: bool | Origin) -> None:
    """``synthetic``: True (synthetic data) or an :class:`Origin` (data and model, two facts)."""
    if synthetic:
        # below the axes' labels: the tight bounding box grows to include it
        fig.text(
            0.99,
            -0.01,
            synthetic.tag if isinstance(synthetic, Origin) else SYNTHETIC_TAG,
            ha="right",
            va="top",
            color="crimson",
            fontsize=9,
            weight="bold",
        )


def _curve(ax: plt.Axes, rows: Sequence[dict[str, Any]], variants: Sequence[str], chance: float):
    for i, v in enumerate(variants):
        mine = sorted((r for r in rows if r["variant"] == v), key=lambda r: r["severity"])
        if not mine:
            continue
        s = np.array([r["severity"] for r in mine])
        acc = np.array([r["accuracy"] for r in mine])
        lo = np.array([r["ci_low"] for r in mine])
        hi = np.array([r["ci_high"] for r in mine])
        color = _COLORS[i % len(_COLORS)]
        ax.plot(s, acc, "o-", color=color, label=v, ms=4)
        ax.fill_between(s, lo, hi, color=color, alpha=0.18, lw=0)
    ax.axhline(chance, color="grey", ls=":", lw=1, label=f"chance ({chance:.2f})")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def plot_robustness(
    rows: Sequence[dict[str, Any]],
    perturbation: str,
    xlabel: str,
    title: str,
    variants: Sequence[str],
    chance: float,
    path: str | Path,
    synthetic: bool,
    confidence: float = 0.95,
) -> Path:
    """Accuracy against severity, one line per variant, bootstrap CI band."""
    fig, ax = plt.subplots(figsize=(6, 4))
    _curve(ax, [r for r in rows if r["perturbation"] == perturbation], variants, chance)
    ax.set(xlabel=xlabel, ylabel="accuracy (measured)", title=title)
    ax.legend(fontsize=8, title=f"band: {confidence:.0%} bootstrap CI", title_fontsize=8)
    tag_synthetic(fig, synthetic)
    return save_figure(fig, path)


def plot_robustness_overview(
    rows: Sequence[dict[str, Any]],
    panels: Sequence[tuple[str, str, str]],
    variants: Sequence[str],
    chance: float,
    path: str | Path,
    synthetic: bool,
) -> Path:
    """All perturbations side by side (``panels``: name, x label, title)."""
    n = len(panels)
    cols = min(3, n)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False)
    for ax, (name, xlabel, title) in zip(axes.flat, panels):
        _curve(ax, [r for r in rows if r["perturbation"] == name], variants, chance)
        ax.set(xlabel=xlabel, ylabel="accuracy", title=title)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.legend(
        handles, labels, loc="upper center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, 1.0)
    )
    tag_synthetic(fig, synthetic)
    return save_figure(fig, path)


def plot_examples(
    strips: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]],
    path: str | Path,
    synthetic: bool,
) -> Path:
    """One row per perturbation: the same image at each severity (``[H, W, 3]`` in [0, 1])."""
    cols = max(len(s) for _, s in strips)
    fig, axes = plt.subplots(
        len(strips), cols, figsize=(1.6 * cols, 1.75 * len(strips)), squeeze=False
    )
    for row, (name, cells) in enumerate(strips):
        for col in range(cols):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(cells):
                ax.axis("off")
                continue
            label, img = cells[col]
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
            ax.set_title(label, fontsize=7)
            if col == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    tag_synthetic(fig, synthetic)
    return save_figure(fig, path)


def plot_ablation(rows: Sequence[dict[str, Any]], path: str | Path, synthetic: bool) -> Path:
    """Test accuracy (with CI) per variant, beside parameters and training time."""
    names = [r["variant"] for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    acc = np.array([r["accuracy"] for r in rows])
    err = np.array([[r["accuracy"] - r["ci_low"], r["ci_high"] - r["accuracy"]] for r in rows]).T
    axes[0].bar(x, acc, yerr=err, capsize=4, color=_COLORS[0])
    for xi, a, r in zip(x, acc, rows):
        axes[0].text(xi + 0.05, min(r["ci_high"] + 0.015, 1.02), f"{a:.3f}", ha="center",
                     fontsize=8)  # fmt: skip
    axes[0].set(ylim=(0, 1.08), ylabel="test accuracy (measured, 95% CI)", title="Accuracy")
    axes[1].bar(x, [r["parameters"] for r in rows], color=_COLORS[1])
    axes[1].set(ylabel="trainable parameters (counted)", title="Parameters")
    axes[2].bar(x, [r["train_seconds"] for r in rows], color=_COLORS[2])
    axes[2].set(ylabel="training time, s (measured)", title="Training time")
    for ax in axes:
        ax.set_xticks(x, [n.replace("neurallnet_", "") for n in names], rotation=20)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    tag_synthetic(fig, synthetic)
    return save_figure(fig, path)
