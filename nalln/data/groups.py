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
from pathlib import Path
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


MAX_LISTED = 5


def file_groups(index: DatasetIndex, path: str | Path) -> list[list[str]]:
    """Groups from a CSV with columns ``path`` (relative to the data root, as ``splits.csv``
    writes it) and ``group`` (a patient or slide id): the images of one id, two or more.

    Every path must be an image of ``index``: a mistyped path would silently leave its image
    ungrouped, so it is an error naming the first few."""
    import csv

    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"path", "group"} <= set(reader.fieldnames):
                raise DataError(
                    f"group file {p} needs a header with the columns path and group (got "
                    f"{', '.join(reader.fieldnames or []) or 'none'})"
                )
            rows = [(r["path"] or "", r["group"] or "") for r in reader]
    except OSError as exc:
        raise DataError(f"cannot read the group file {p} ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"group file {p} is not a UTF-8 CSV ({exc})") from None
    known = {r.path for r in index.records}
    unknown = sorted({path for path, _ in rows if path not in known})
    if unknown:
        shown = ", ".join(unknown[:MAX_LISTED])
        more = f" and {len(unknown) - MAX_LISTED} more" if len(unknown) > MAX_LISTED else ""
        raise DataError(
            f"group file {p} names {len(unknown)} path(s) that are not images of {index.root}: "
            f"{shown}{more}; paths are relative to the data root, as in splits.csv"
        )
    if any(not g.strip() for _, g in rows):
        raise DataError(f"group file {p} has rows with an empty group id")
    members: dict[str, set[str]] = {}
    for path, group in rows:
        members.setdefault(group.strip(), set()).add(path)
    return sorted((sorted(m) for m in members.values() if len(m) > 1), key=lambda g: g[0])


def straddling_groups(
    groups: Sequence[Sequence[str]], splits: dict[str, Sequence[Any]]
) -> list[dict[str, Any]]:
    """Groups whose images lie in more than one split of a manifest (a leak): each with the
    splits it spans."""
    where = {r.path: name for name, records in splits.items() for r in records}
    out = []
    for g in groups:
        spans = sorted({where[p] for p in g if p in where})
        if len(spans) > 1:
            out.append({"paths": list(g), "splits": spans})
    return out


def merge_groups(*lists: Sequence[Sequence[str]]) -> list[list[str]]:
    """One partition from several lists of groups: groups that share a path become one."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for groups in lists:
        for g in groups:
            for other in g[1:]:
                parent[find(other)] = find(g[0])
    members: dict[str, list[str]] = {}
    for x in parent:
        members.setdefault(find(x), []).append(x)
    return sorted((sorted(m) for m in members.values() if len(m) > 1), key=lambda g: g[0])


def split_groups(index: DatasetIndex, cfg: Any, echo: Callable[[str], None]) -> list[list[str]]:
    """The groups a new split of ``index`` keeps together under a TrainConfig ``cfg``: the
    group file's (patient or slide ids), if given, joined with the duplicate groups."""
    given: list[list[str]] = []
    if getattr(cfg, "split_groups_file", None):
        given = file_groups(index, cfg.split_groups_file)
        echo(
            f"groups: {len(given)} group(s) of 2+ images from {cfg.split_groups_file} "
            f"({sum(len(g) for g in given)} images) each kept in one split"
        )
    if not cfg.split_group_duplicates:
        echo("duplicates: not grouped (split_group_duplicates=false); they may straddle splits")
        return given
    found = duplicate_groups(index, cfg.split_duplicate_bits)
    echo(found.describe())
    return merge_groups(given, found.groups)
