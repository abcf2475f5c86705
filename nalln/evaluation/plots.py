"""PNG figures for training and evaluation (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from nalln.io import save_figure
from nalln.provenance import DATA_TAG, Origin, plot_tag

SYNTHETIC_TAG = DATA_TAG


def stamp_provenance(
    fig: plt.Figure, synthetic: bool | Origin, synthetic_model: bool = False
) -> None:
    """Red tag: SYNTHETIC DATA, or MODEL TRAINED ON SYNTHETIC DATA for real images."""
    tag = synthetic.tag if isinstance(synthetic, Origin) else plot_tag(synthetic, synthetic_model)
    if tag:
        fig.text(
            0.99,
            0.01,
            tag,
            ha="right",
            va="bottom",
            color="crimson",
            fontsize=9,
            weight="bold",
        )


def plot_learning_curves(
    history: Sequence[dict], path: str | Path, synthetic: bool = False
) -> Path:
    return save_figure(learning_curves_figure(history, synthetic), path)


def learning_curves_figure(history: Sequence[dict], synthetic: bool = False) -> plt.Figure:
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    if any(h.get("val_loss") is not None for h in history):
        ax1.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax2.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    if any(h.get("val_accuracy") is not None for h in history):
        ax2.plot(epochs, [h["val_accuracy"] for h in history], "s-", label="validation")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: no tick at 1.5
    stamp_provenance(fig, synthetic)
    return fig


def plot_confusion_matrix(
    cm: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    title: str,
    synthetic: bool = False,
    synthetic_model: bool = False,
) -> Path:
    cm = np.asarray(cm)
    row = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.3 * len(class_names) + 2, 1.1 * len(class_names) + 1.6))
    im = ax.imshow(row, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{row[i, j]:.1%}",
                ha="center",
                va="center",
                color="white" if row[i, j] > 0.6 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="row fraction (recall)")
    stamp_provenance(fig, synthetic, synthetic_model)
    return save_figure(fig, path)
