"""``nalln data check``: integrity, formats and duplicates of an image data set.

Duplicates are what make "test" and "external" figures meaningless, so they are looked for
within a split, across train/val/test and across two data sets: exact copies by SHA-256 of the
file, near copies (re-encoded, resized, slightly recoloured) by the Hamming distance between
64-bit perceptual hashes (DCT pHash, ``imagehash``).
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from nalln.data.dataset import DatasetIndex, scan
from nalln.data.images import IMAGE_EXTENSIONS, open_rgb
from nalln.errors import DataError

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


@dataclass
class FileReport:
    dataset: str  # "primary" (the checked set) or "against"
    path: str  # relative to the data-set root
    label: str
    status: str  # ok | zero-byte | not-an-image | corrupt | truncated | skipped (not an image type)
    detail: str = ""
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    format: str | None = None
    sha256: str | None = None
    phash: str | None = None
    split: str | None = None
    quality: list[str] = field(default_factory=list)


@dataclass
class DuplicatePair:
    kind: str  # exact | near
    scope: str  # within-split | across-splits | within-dataset | across-datasets
    a: str
    b: str
    distance: int
    a_split: str | None = None
    b_split: str | None = None


def _classify_error(msg: str) -> str:
    if "0 bytes" in msg:
        return "zero-byte"
    if "not an image" in msg:
        return "not-an-image"
    if "truncated" in msg:
        return "truncated"
    return "corrupt"


def inspect_file(
    root: Path,
    rel: str,
    label: str,
    dataset: str,
    quality_fn: Callable[[Image.Image], list[str]] | None = None,
) -> FileReport:
    path = root / rel
    rep = FileReport(dataset, rel, label, "ok")
    data = path.read_bytes()
    rep.sha256 = hashlib.sha256(data).hexdigest()
    if Path(rel).suffix.lower() not in IMAGE_EXTENSIONS:
        rep.status, rep.detail = "skipped", "file extension is not an image type"
        return rep
    if not data:
        rep.status, rep.detail = "zero-byte", "file is empty (0 bytes)"
        return rep
    try:
        img = open_rgb(path)
        with Image.open(path) as raw:
            rep.width, rep.height = raw.width, raw.height
            rep.mode, rep.format = raw.mode, raw.format
    except DataError as exc:
        rep.status, rep.detail = _classify_error(str(exc)), str(exc)
        return rep
    except Exception as exc:  # Pillow raises many types for hostile files
        rep.status, rep.detail = "corrupt", f"{type(exc).__name__}: {exc}"
        return rep
    rep.phash = str(imagehash.phash(img))
    if quality_fn is not None:
        rep.quality = quality_fn(img)
    return rep


def _hash_matrix(hexes: list[str]) -> np.ndarray:
    return np.array(
        [np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in hexes], dtype=np.uint8
    ).reshape(-1, 8)


def near_pairs(
    a: np.ndarray, b: np.ndarray | None, threshold: int, chunk: int = 512
) -> Iterable[tuple[int, int, int]]:
    """Index pairs with Hamming distance <= threshold (``b=None``: pairs within ``a``, i < j)."""
    other = a if b is None else b
    for start in range(0, len(a), chunk):
        block = a[start : start + chunk]
        dist = _POPCOUNT[block[:, None, :] ^ other[None, :, :]].sum(axis=2, dtype=np.int32)
        ii, jj = np.nonzero(dist <= threshold)
        for i, j in zip(ii, jj, strict=True):
            gi = start + int(i)
            if b is None and gi >= j:
                continue
            yield gi, int(j), int(dist[i, j])


@dataclass
class AuditReport:
    root: str
    layout: str
    synthetic: bool
    counts: dict[str, int]
    status_counts: dict[str, int]
    sizes: dict[str, int]
    modes: dict[str, int]
    formats: dict[str, int]
    quality_counts: dict[str, int]
    skipped_non_images: list[str]
    files: list[FileReport]
    duplicates: list[DuplicatePair]
    threshold: int
    against: dict | None = None
    splits_checked: bool = False

    def split_check(self) -> dict | None:
        """With ``--splits``: how many duplicate pairs straddle two splits (0: no leak)."""
        if not self.splits_checked:
            return None
        n = sum(d.scope == "across-splits" for d in self.duplicates)
        return {"pairs_across_splits": n, "clean": n == 0}

    def problems(self) -> list[FileReport]:
        """Image files that cannot be used (skipped non-image files are listed on their own)."""
        return [f for f in self.files if f.status not in ("ok", "skipped")]

    def duplicate_summary(self) -> dict[str, int]:
        c = Counter(f"{d.kind}/{d.scope}" for d in self.duplicates)
        return dict(sorted(c.items()))

    def to_json(self) -> dict:
        return {
            "root": self.root,
            "layout": self.layout,
            "synthetic": self.synthetic,
            "counts": self.counts,
            "status_counts": self.status_counts,
            "problems": [asdict(f) for f in self.problems()],
            "sizes": self.sizes,
            "modes": self.modes,
            "formats": self.formats,
            "image_quality": self.quality_counts,
            "skipped_non_images": self.skipped_non_images,
            "duplicates": {
                "near_threshold_bits": self.threshold,
                "summary": self.duplicate_summary(),
                "pairs": [asdict(d) for d in self.duplicates],
            },
            "against": self.against,
            "split_check": self.split_check(),
            "provenance": "counted: every file read; exact duplicates by SHA-256, near "
            f"duplicates by 64-bit pHash Hamming distance <= {self.threshold}",
        }


def _inspect_all(index: DatasetIndex, dataset: str, progress: bool, quality_fn) -> list[FileReport]:
    items = [(r.path, r.label) for r in index.records] + [
        (s, s.split("/")[0]) for s in index.skipped
    ]
    reports = []
    for rel, label in tqdm(
        items, desc=f"checking {dataset}", disable=not progress, unit="file", leave=False
    ):
        label = label if dataset != "skipped" else label
        cls = index.layout.class_of(label) or label
        reports.append(inspect_file(index.root, rel, cls, dataset, quality_fn))
    return reports


def _find_duplicates(files: list[FileReport], threshold: int, cross: bool) -> list[DuplicatePair]:
    """Exact and near pairs among ``files`` (``cross``: only pairs across the two data sets)."""
    ok = [f for f in files if f.status == "ok" and f.phash]
    out: list[DuplicatePair] = []

    def scope(a: FileReport, b: FileReport) -> str:
        if a.dataset != b.dataset:
            return "across-datasets"
        if a.split and b.split:
            return "within-split" if a.split == b.split else "across-splits"
        return "within-dataset"

    def name(f: FileReport) -> str:
        return f.path if f.dataset == "primary" else f"{f.dataset}:{f.path}"

    if cross:
        left = [f for f in ok if f.dataset == "primary"]
        right = [f for f in ok if f.dataset != "primary"]
        pairs = (
            near_pairs(
                _hash_matrix([f.phash for f in left]),
                _hash_matrix([f.phash for f in right]),
                threshold,
            )
            if left and right
            else []
        )
        for i, j, d in pairs:
            a, b = left[i], right[j]
            kind = "exact" if a.sha256 == b.sha256 else "near"
            out.append(DuplicatePair(kind, scope(a, b), name(a), name(b), d, a.split, b.split))
        return out
    if len(ok) > 1:
        for i, j, d in near_pairs(_hash_matrix([f.phash for f in ok]), None, threshold):
            a, b = ok[i], ok[j]
            kind = "exact" if a.sha256 == b.sha256 else "near"
            out.append(DuplicatePair(kind, scope(a, b), name(a), name(b), d, a.split, b.split))
    # byte-identical files that are not decodable images are still exact duplicates
    by_sha: dict[str, list[FileReport]] = {}
    for f in files:
        if f.status != "ok" and f.sha256 and Path(f.path).suffix.lower() in IMAGE_EXTENSIONS:
            by_sha.setdefault(f.sha256, []).append(f)
    for group in by_sha.values():
        for a, b in itertools.pairwise(group):
            out.append(DuplicatePair("exact", scope(a, b), name(a), name(b), 0, a.split, b.split))
    return out


def audit(
    root: str | Path,
    *,
    layout: str = "auto",
    variant: str | None = None,
    against: str | Path | None = None,
    against_layout: str = "auto",
    splits: dict[str, list] | None = None,
    threshold: int = 6,
    progress: bool = True,
    quality_fn: Callable[[Image.Image], list[str]] | None = None,
) -> AuditReport:
    if not 0 <= threshold <= 32:
        raise DataError("--threshold is a Hamming distance in bits between 0 and 32")
    index = scan(root, layout, variant)
    files = _inspect_all(index, "primary", progress, quality_fn)
    if splits:
        where = {r.path: s for s, recs in splits.items() for r in recs}
        for f in files:
            f.split = where.get(f.path)
    dups = _find_duplicates(files, threshold, cross=False)
    against_info = None
    if against is not None:
        other = scan(against, against_layout)
        other_files = _inspect_all(other, "against", progress, quality_fn)
        dups += _find_duplicates(files + other_files, threshold, cross=True)
        within_other = _find_duplicates(other_files, threshold, cross=False)
        against_info = {
            "root": str(other.root),
            "layout": other.layout.name,
            "counts": other.counts(),
            "status_counts": dict(Counter(f.status for f in other_files if f.status != "skipped")),
            "duplicates_within": len(within_other),
        }
        files = files + other_files
    primary = [f for f in files if f.dataset == "primary" and f.status != "skipped"]
    ok = [f for f in primary if f.status == "ok"]
    # what training can use: readable images per class (a corrupt file is not an image of it)
    counts = {c: 0 for c in index.counts()} | dict(Counter(f.label for f in ok))
    return AuditReport(
        root=str(index.root),
        layout=index.layout.name,
        synthetic=index.synthetic,
        counts=counts,
        status_counts=dict(Counter(f.status for f in primary)),
        sizes=dict(Counter(f"{f.width}x{f.height}" for f in ok).most_common()),
        modes=dict(Counter(f.mode for f in ok).most_common()),
        formats=dict(Counter(f.format for f in ok).most_common()),
        quality_counts=dict(Counter(q for f in ok for q in f.quality)),
        skipped_non_images=list(index.skipped),
        files=files,
        duplicates=dups,
        threshold=threshold,
        against=against_info,
        splits_checked=bool(splits),
    )
