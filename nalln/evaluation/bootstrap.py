"""Percentile bootstrap confidence intervals for every metric at once.

Each resample draws ``n`` (true, predicted) pairs with replacement; the confusion matrices of
all resamples are built with one ``bincount`` per chunk, then :func:`metrics_from_confusion`
gives every metric for every resample. The interval is the (alpha/2, 1 - alpha/2) percentile of
the resampled values, as ``scipy.stats.bootstrap(method="percentile")``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nalln.evaluation.metrics import metrics_from_confusion


@dataclass(frozen=True)
class BootstrapSpec:
    n_resamples: int = 10_000
    confidence: float = 0.95
    seed: int = 42
    chunk: int = 1_000


def bootstrap_confusions(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, spec: BootstrapSpec = BootstrapSpec()
):
    """Yield ``[chunk, K, K]`` confusion matrices of bootstrap resamples."""
    rng = np.random.default_rng(spec.seed)
    pair = np.asarray(y_true, np.int64) * num_classes + np.asarray(y_pred, np.int64)
    n = len(pair)
    kk = num_classes * num_classes
    done = 0
    while done < spec.n_resamples:
        b = min(spec.chunk, spec.n_resamples - done)
        draws = pair[rng.integers(0, n, size=(b, n))]
        flat = (draws + (np.arange(b)[:, None] * kk)).ravel()
        yield np.bincount(flat, minlength=b * kk).reshape(b, num_classes, num_classes)
        done += b


def bootstrap_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, spec: BootstrapSpec = BootstrapSpec()
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{metric: (low, high)}`` percentile intervals; per-class metrics give arrays of K."""
    if len(y_true) == 0:
        raise ValueError("cannot bootstrap an empty set of predictions")
    samples: dict[str, list[np.ndarray]] = {}
    for cms in bootstrap_confusions(y_true, y_pred, num_classes, spec):
        for k, v in metrics_from_confusion(cms).items():
            if k != "support":
                samples.setdefault(k, []).append(v)
    alpha = 1.0 - spec.confidence
    out = {}
    for k, chunks in samples.items():
        values = np.concatenate(chunks, axis=0)
        low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
        out[k] = (low, high)
    return out


def accuracy_interval(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, spec: BootstrapSpec = BootstrapSpec()
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the accuracy alone (the same resamples as
    :func:`bootstrap_metrics`, so it equals that function's ``accuracy`` interval)."""
    low, high = bootstrap_metrics(np.asarray(y_true), np.asarray(y_pred), num_classes, spec)[
        "accuracy"
    ]
    return float(low), float(high)
