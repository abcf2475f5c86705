"""Classification metrics from a confusion matrix, vectorised over many matrices at once.

Working on ``[..., K, K]`` count arrays lets the bootstrap compute 10,000 resamples of every
metric with a handful of numpy operations. Undefined ratios (no predictions or no samples of a
class) are 0, as scikit-learn's ``zero_division=0``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    idx = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape, dtype=np.float64), where=b > 0)


def metrics_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, per-class precision/recall/F1/support and macro/weighted averages.

    ``cm`` may carry leading batch dimensions; every output keeps them.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    total = support.sum(axis=-1)
    precision = _div(tp, predicted)
    recall = _div(tp, support)
    f1 = _div(2 * precision * recall, precision + recall)
    weights = _div(support, total[..., None])
    return {
        "accuracy": _div(tp.sum(axis=-1), total),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
        "macro_precision": precision.mean(axis=-1),
        "macro_recall": recall.mean(axis=-1),
        "macro_f1": f1.mean(axis=-1),
        "weighted_precision": (precision * weights).sum(axis=-1),
        "weighted_recall": (recall * weights).sum(axis=-1),
        "weighted_f1": (f1 * weights).sum(axis=-1),
    }


SCALAR_METRICS = (
    "accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_precision",
    "weighted_recall",
    "weighted_f1",
)
PER_CLASS_METRICS = ("precision", "recall", "f1")


def per_class_table(
    m: dict[str, np.ndarray], class_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    return {
        c: {k: float(m[k][i]) for k in (*PER_CLASS_METRICS, "support")}
        for i, c in enumerate(class_names)
    }
