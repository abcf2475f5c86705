"""Stratified train/val/test split manifests, written once and reused by every command.

The split is made as the paper's numbers imply (326 test images out of 3,256): a stratified
80/20 split, then the 20% halved into validation and test, both with seed 42, using
scikit-learn's ``train_test_split``.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nalln.data.dataset import DatasetIndex, Record
from nalln.data.groups import representatives
from nalln.errors import DataError
from nalln.io import write_csv

SPLITS = ("train", "val", "test")
MANIFEST_HEADER = ("path", "label", "split")


@dataclass(frozen=True)
class SplitSpec:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    seed: int = 42

    def __post_init__(self) -> None:
        fr = (self.train, self.val, self.test)
        if min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6 or self.train <= 0:
            raise DataError(f"split fractions must be >= 0, train > 0, and sum to 1; got {fr}")


def make_splits(
    index: DatasetIndex, spec: SplitSpec = SplitSpec(), groups: Sequence[Sequence[str]] = ()
) -> dict[str, list[Record]]:
    """The stratified split; the members of each of ``groups`` (record paths, e.g. duplicates
    from :func:`nalln.data.groups.duplicate_groups`) land in one split together. Without groups
    the split is the paper's, unchanged."""
    if not groups:
        return _split_units(index, list(index.records), spec, groups)
    rep = representatives(groups)
    members: dict[str, list[Record]] = {}
    for r in index.records:
        members.setdefault(rep.get(r.path, r.path), []).append(r)
    units = [r for r in index.records if rep.get(r.path, r.path) == r.path]
    return {
        name: [m for u in split for m in members[u.path]]
        for name, split in _split_units(index, units, spec, groups).items()
    }


def _split_units(
    index: DatasetIndex,
    records: list[Record],
    spec: SplitSpec,
    groups: Sequence[Sequence[str]],
) -> dict[str, list[Record]]:
    from sklearn.model_selection import train_test_split

    labels = [r.label for r in records]
    holdout = spec.val + spec.test
    counts = Counter(labels)
    if min(counts.values()) < 3 and holdout > 0:
        raise DataError(f"each class needs at least 3 images to split; counts are {dict(counts)}")
    if holdout == 0:
        return {"train": records, "val": [], "test": []}
    try:
        train, rest = train_test_split(
            records, test_size=holdout, stratify=labels, random_state=spec.seed
        )
        if spec.val == 0 or spec.test == 0:
            val, test = (rest, []) if spec.test == 0 else ([], rest)
        else:
            val, test = train_test_split(
                rest,
                test_size=spec.test / holdout,
                stratify=[r.label for r in rest],
                random_state=spec.seed,
            )
    except ValueError:
        smallest = min(counts, key=counts.get)
        raise DataError(
            f"too few images per class for a stratified {spec.train}/{spec.val}/{spec.test} split "
            f"(smallest class: {smallest}, {counts[smallest]} images); add images"
            + _fractions_hint(index, spec, groups)
        ) from None
    return {"train": list(train), "val": list(val), "test": list(test)}


def _fractions_hint(index: DatasetIndex, spec: SplitSpec, groups: Sequence[Sequence[str]]) -> str:
    """Fractions that do split this data set (tried, so the hint works when followed), written
    for both commands; all three are given because they must still sum to 1."""
    for holdout in (0.15, 0.2, 0.25, 0.3):
        if holdout <= max(spec.val, spec.test):
            continue
        train = round(1 - 2 * holdout, 2)
        try:
            make_splits(index, SplitSpec(train, holdout, holdout, spec.seed), groups)
        except DataError:
            continue
        return (
            f" or use larger validation and test fractions (they must sum to 1 with train): "
            f"`nalln train ... --set split_train={train:g} --set split_val={holdout:g} "
            f"--set split_test={holdout:g}` or `nalln data split ... --train {train:g} "
            f"--val {holdout:g} --test {holdout:g}`"
        )
    return ""


def write_manifest(path: str | Path, splits: dict[str, list[Record]]) -> Path:
    rows = [
        (r.path, r.label, s)
        for s in SPLITS
        for r in sorted(splits.get(s, []), key=lambda r: r.path)
    ]
    return write_csv(path, rows, MANIFEST_HEADER)


def read_manifest(path: str | Path) -> dict[str, list[Record]]:
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != MANIFEST_HEADER:
                raise DataError(
                    f"{p} is not a split manifest (header must be {','.join(MANIFEST_HEADER)})"
                )
            out: dict[str, list[Record]] = {s: [] for s in SPLITS}
            for i, row in enumerate(reader, start=2):
                if row["split"] not in out:
                    raise DataError(f"{p} line {i}: unknown split {row['split']!r}")
                out[row["split"]].append(Record(row["path"], row["label"]))
    except FileNotFoundError:
        raise DataError(f"split manifest {p} does not exist") from None
    except UnicodeDecodeError:
        raise DataError(f"{p} is not a text CSV split manifest") from None
    return out


def check_manifest(index: DatasetIndex, splits: dict[str, list[Record]], source: Path) -> None:
    """Every manifest entry must exist in the data set with the same class."""
    known = {r.path: r.label for r in index.records}
    for split, recs in splits.items():
        for r in recs:
            if r.path not in known:
                raise DataError(
                    f"split manifest {source} lists {r.path} ({split}), which is not in "
                    f"{index.root}; "
                    "point --data at the data set the run was trained on"
                )
            if known[r.path] != r.label:
                raise DataError(
                    f"split manifest {source} says {r.path} is {r.label} but the data set says "
                    f"{known[r.path]}; the data set changed since the split was made"
                )
