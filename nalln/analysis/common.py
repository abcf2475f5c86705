"""What the analyses share: the evaluation images of a run, and an accuracy interval."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nalln.data.dataset import DatasetIndex, Record, load_images
from nalln.errors import NallnError
from nalln.evaluation.evaluate import class_labels, select_records
from nalln.runs import LoadedModel


@dataclass
class EvalSet:
    """Images of one split of a run's manifest, decoded once per input size."""

    index: DatasetIndex
    records: list[Record]
    labels: np.ndarray  # class index per record, in the model's class order
    subset: str
    progress: bool = False
    _cache: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def synthetic(self) -> bool:
        return self.index.synthetic

    def images(self, size: int) -> torch.Tensor:
        """uint8 ``[N, 3, size, size]``."""
        if size not in self._cache:
            self._cache[size] = load_images(
                self.index, self.records, size, self.progress, f"loading {self.subset} images"
            )
        return self._cache[size]


def eval_set(
    loaded: LoadedModel,
    data: str | Path | None = None,
    split: str = "test",
    *,
    max_images: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> EvalSet:
    """The ``split`` of the run's manifest (``max_images``: a seeded, class-stratified subset)."""
    index, records, subset = select_records(loaded, data, split, None)
    if max_images is not None:
        if max_images < 1:
            raise NallnError("--max-images must be at least 1")
        if max_images < len(records):
            records = stratified_subset(records, max_images, seed)
    labels = class_labels(records, loaded.class_names, index)
    return EvalSet(index, records, labels, subset, progress)


def stratified_subset(records: list[Record], n: int, seed: int) -> list[Record]:
    """``n`` records keeping the class proportions (largest remainders), in manifest order."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_class.setdefault(r.label, []).append(i)
    share = {c: n * len(ix) / len(records) for c, ix in by_class.items()}
    take = {c: int(s) for c, s in share.items()}
    by_remainder = sorted(share, key=lambda c: share[c] - take[c], reverse=True)
    for c in by_remainder[: n - sum(take.values())]:
        take[c] += 1
    chosen: list[int] = []
    for c, ix in by_class.items():
        chosen.extend(rng.choice(ix, size=take[c], replace=False).tolist())
    return [records[i] for i in sorted(chosen)]


def accuracy_ci(
    correct: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of a 0/1 vector (same method as evaluate)."""
    correct = np.asarray(correct, dtype=np.float64)
    if len(correct) == 0:
        return float("nan"), float("nan")
    if n_resamples < 1:
        acc = float(correct.mean())
        return acc, acc
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // max(1, len(correct)))
    for i in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - i)
        means[i : i + b] = correct[rng.integers(0, len(correct), size=(b, len(correct)))].mean(1)
    alpha = 1.0 - confidence
    lo, hi = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def default_out(loaded: LoadedModel, run: str | Path, name: str) -> Path:
    """``RUN/<name>`` (or beside a bare checkpoint file)."""
    base = loaded.run.path if loaded.run is not None else Path(run).parent
    return base / name
