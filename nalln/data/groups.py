"""Duplicate groups: images that must land in the same split.

An exact copy (same SHA-256) or a near copy (re-encoded, resized: 64-bit pHash within a few
bits) of a training image in the test split is a test image the model has seen; it inflates
every reported accuracy. ``nalln data check`` finds such pairs; :func:`duplicate_groups` uses the
same hashing (``nalln.data.audit``) to join them into groups (transitively: a ~ b ~ c is one
group) that :func:`nalln.data.splits.make_splits` keeps in one split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import imagehash
from tqdm.auto import tqdm

from nalln.data.dataset import DatasetIndex
from nalln.data.images import open_rgb
from nalln.errors import DataError

DEFAULT_THRESHOLD = 6  # bits, as `nalln data check --threshold`


@dataclass(frozen=True)
class DuplicateGroups:
    """Groups of two or more record paths, and how they were found."""

    groups: list[list[str]]
    exact_pairs: int
    near_pairs: int
    threshold: int

    @property
    def images(self) -> int:
        return sum(len(g) for g in self.groups)

    def describe(self) -> str:
        if not self.groups:
            return f"duplicates: none (exact by SHA-256, near by pHash <= {self.threshold} bits)"
        largest = max(self.groups, key=len)
        return (
            f"duplicates: {len(self.groups)} group(s) of {self.images} images ({self.exact_pairs} "
            f"exact, {self.near_pairs} near pair(s) at pHash <= {self.threshold} bits) kept "
            f"within one split each; largest: {', '.join(largest[:3])}"
            + (" ..." if len(largest) > 3 else "")
            + "; `nalln data check` lists them"
        )


def duplicate_groups(
    index: DatasetIndex, threshold: int = DEFAULT_THRESHOLD, progress: bool = False
) -> DuplicateGroups:
    """Exact and near duplicates among ``index``'s images, joined into groups (union-find)."""
    from nalln.data.audit import _hash_matrix, near_pairs

    records = index.records
    parent = list(range(len(records)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    shas: list[str] = []
    hashed: list[int] = []
    phashes: list[str] = []
    for i, r in enumerate(
        tqdm(records, desc="hashing images", disable=not progress, unit="img", leave=False)
    ):
        path = index.root / r.path
        shas.append(hashlib.sha256(path.read_bytes()).hexdigest())
        try:
            phashes.append(str(imagehash.phash(open_rgb(path))))
        except DataError:  # unreadable: only its bytes can match; loading reports it later
            continue
        hashed.append(i)
    first_of: dict[str, int] = {}
    exact = 0
    for i, sha in enumerate(shas):
        if sha in first_of:
            join(i, first_of[sha])
            exact += 1
        else:
            first_of[sha] = i
    near = 0
    if len(hashed) > 1:
        for a, b, _ in near_pairs(_hash_matrix(phashes), None, threshold):
            i, j = hashed[a], hashed[b]
            if shas[i] != shas[j]:
                near += 1
            join(i, j)
    members: dict[int, list[str]] = {}
    for i, r in enumerate(records):
        members.setdefault(find(i), []).append(r.path)
    groups = sorted((sorted(g) for g in members.values() if len(g) > 1), key=lambda g: g[0])
    return DuplicateGroups(groups, exact, near, threshold)


def representatives(groups: Sequence[Sequence[str]]) -> dict[str, str]:
    """Each grouped path -> the group's first path (the one the split decides for)."""
    return {p: min(g) for g in groups for p in g}


def split_groups(index: DatasetIndex, cfg: Any, echo: Callable[[str], None]) -> list[list[str]]:
    """The groups a new split of ``index`` keeps together under a TrainConfig ``cfg``."""
    if not cfg.split_group_duplicates:
        echo("duplicates: not grouped (split_group_duplicates=false); they may straddle splits")
        return []
    found = duplicate_groups(index, cfg.split_duplicate_bits)
    echo(found.describe())
    return found.groups
