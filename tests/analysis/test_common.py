"""Shared helpers: the stratified subset and the accuracy interval."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from nalln.analysis.common import accuracy_ci, stratified_subset
from nalln.data.dataset import Record


def test_stratified_subset_keeps_proportions_and_order():
    recs = [
        Record(f"{c}/{i}.jpg", c) for c, n in (("A", 60), ("B", 30), ("C", 10)) for i in range(n)
    ]
    sub = stratified_subset(recs, 20, seed=0)
    assert Counter(r.label for r in sub) == {"A": 12, "B": 6, "C": 2}
    assert sub == sorted(sub, key=recs.index)
    assert sub == stratified_subset(recs, 20, seed=0)
    assert len(stratified_subset(recs, 7, seed=1)) == 7


def test_accuracy_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = (rng.random(50) < 0.8).astype(int)
    large = (rng.random(5000) < 0.8).astype(int)
    lo, hi = accuracy_ci(small, 2000)
    assert lo <= small.mean() <= hi
    lo2, hi2 = accuracy_ci(large, 2000)
    assert (hi2 - lo2) < (hi - lo) / 5
    # binomial normal approximation of the 95% interval width
    assert hi2 - lo2 == pytest.approx(2 * 1.96 * np.sqrt(0.8 * 0.2 / 5000), rel=0.15)
    assert accuracy_ci(np.ones(10), 100) == (1.0, 1.0)


def test_max_images_subsets_the_robustness_split(cli, run_copy, tmp_path):
    import json

    code, _, err = cli(
        "robustness",
        run_copy,
        "--split",
        "train",
        "--max-images",
        "8",
        "--only",
        "blur",
        "--blur",
        "0",
        "--out",
        tmp_path / "r",
        "-q",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "robustness.json").read_text())["source"]["n_images"] == 8
