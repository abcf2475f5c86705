"""The images of a run: its data set, its recorded splits and their labels.

Every command that evaluates, converts, simulates or fine-tunes a run selects images the same
way, through these functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nalln.data.dataset import DatasetIndex, Record, scan
from nalln.data.splits import read_manifest
from nalln.errors import DataError, NallnError
from nalln.runs import LoadedModel


def subset(records: list[Record], n: int | None, seed: int = 0) -> list[Record]:
    """A fixed pseudo-random subset (classes mixed; the same on every call)."""
    if n is None or n >= len(records):
        return list(records)
    order = np.random.default_rng(seed).permutation(len(records))[:n]
    return [records[i] for i in sorted(order)]


def run_index(loaded: LoadedModel, data: str | Path | None) -> DatasetIndex:
    """The data set the run was trained on (or ``data``), scanned with the run's layout."""
    src = loaded.run_meta.data
    return scan(src.require_root(data), src.layout, src.variant)


def split_records(loaded: LoadedModel, index: DatasetIndex, split: str) -> list[Record]:
    if loaded.run is None or not loaded.run.splits.is_file():
        raise NallnError(
            "this needs the run folder (it holds splits.csv); pass RUN instead of a checkpoint"
        )
    splits = read_manifest(loaded.run.splits)
    known = {r.path for r in index.records}
    records = [r for r in splits.get(split, []) if r.path in known]
    if not records:
        raise NallnError(
            f"no {split} images of this run were found under {index.root}; pass the data set "
            "the run was trained on with --data ROOT"
        )
    return records


def labels_of(
    records: list[Record], class_names: tuple[str, ...] | None, index: DatasetIndex
) -> torch.Tensor:
    """Class indices of ``records`` in the model's class order (``index``'s if None)."""
    names = class_names or index.classes
    missing = sorted({r.label for r in records} - set(names))
    if missing:
        raise DataError(
            f"data set {index.root} has class(es) {missing} that the model does not know "
            f"({', '.join(names)})"
        )
    return torch.tensor([names.index(r.label) for r in records], dtype=torch.long)
