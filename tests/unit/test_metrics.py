import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    precision_recall_fscore_support,
)
from sklearn.metrics import (
    confusion_matrix as sk_cm,
)

from nalln.evaluation.bootstrap import BootstrapSpec, bootstrap_metrics
from nalln.evaluation.metrics import confusion_matrix, metrics_from_confusion


@pytest.fixture()
def preds():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.8, y, rng.integers(0, 4, 300))
    p[y == 3] = np.where(rng.random((y == 3).sum()) < 0.5, 2, 3)  # a weaker class
    return y, p


def test_point_metrics_match_scikit_learn(preds) -> None:
    y, p = preds
    cm = confusion_matrix(y, p, 4)
    assert (cm == sk_cm(y, p, labels=[0, 1, 2, 3])).all()
    m = metrics_from_confusion(cm)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    for avg in ("macro", "weighted"):
        pr, rc, f1, _ = precision_recall_fscore_support(y, p, average=avg, zero_division=0)
        assert m[f"{avg}_precision"] == pytest.approx(pr)
        assert m[f"{avg}_recall"] == pytest.approx(rc)
        assert m[f"{avg}_f1"] == pytest.approx(f1)
    pr, rc, f1, sup = precision_recall_fscore_support(y, p, zero_division=0)
    np.testing.assert_allclose(m["precision"], pr)
    np.testing.assert_allclose(m["f1"], f1)
    np.testing.assert_array_equal(m["support"], sup)


def test_undefined_precision_counts_as_zero() -> None:
    m = metrics_from_confusion(confusion_matrix(np.array([0, 0, 1]), np.array([0, 0, 0]), 2))
    assert m["precision"][1] == 0.0 and m["recall"][1] == 0.0


def test_bootstrap_bounds_agree_with_scipy_percentile(preds) -> None:
    y, p = preds
    ours = bootstrap_metrics(y, p, 4, BootstrapSpec(n_resamples=10_000, seed=42))
    correct = (y == p).astype(float)
    ref = stats.bootstrap(
        (correct,),
        np.mean,
        n_resamples=10_000,
        method="percentile",
        confidence_level=0.95,
        random_state=1,
        vectorized=True,
    )
    lo, hi = ours["accuracy"]
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.01)

    def macro_f1(a, b):
        return metrics_from_confusion(confusion_matrix(a, b, 4))["macro_f1"]

    ref2 = stats.bootstrap(
        (y, p),
        macro_f1,
        paired=True,
        vectorized=False,
        n_resamples=2000,
        method="percentile",
        random_state=2,
    )
    lo, hi = ours["macro_f1"]
    assert lo == pytest.approx(ref2.confidence_interval.low, abs=0.015)
    assert hi == pytest.approx(ref2.confidence_interval.high, abs=0.015)


def test_bootstrap_is_seeded_and_per_class_shaped(preds) -> None:
    y, p = preds
    a = bootstrap_metrics(y, p, 4, BootstrapSpec(n_resamples=500, seed=42))
    b = bootstrap_metrics(y, p, 4, BootstrapSpec(n_resamples=500, seed=42, chunk=77))
    np.testing.assert_array_equal(a["recall"][0], b["recall"][0])
    assert a["recall"][0].shape == (4,)
    assert (a["recall"][0] <= a["recall"][1]).all()
