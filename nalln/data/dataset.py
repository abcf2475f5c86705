"""Finding the images of a data set on disk and loading them into memory.

A data set is a root folder, a :class:`Layout` and the list of ``(relative path, class)``
records found under it. Images are decoded once into a uint8 cache: the ALL sets are a few
thousand 224x224 images (about 0.5 GB), and decoding JPEGs every epoch on two cores would cost
more than the spiking network itself.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from nalln.data.images import is_image_name, load_image
from nalln.data.layouts import BUILTIN_LAYOUTS, LAYOUT_FILE, Layout, get_layout, load_layout_file
from nalln.errors import DataError

log = logging.getLogger(__name__)
SYNTHETIC_MARKER = "SYNTHETIC.json"
_IGNORED_NAMES = {
    ".ds_store",
    "thumbs.db",
    "desktop.ini",
    LAYOUT_FILE.lower(),
    SYNTHETIC_MARKER.lower(),
}


@dataclass(frozen=True)
class Record:
    path: str  # relative to the data-set root, POSIX separators
    label: str  # class name


@dataclass
class DatasetIndex:
    """The images of one data set: where they are, which class each is, what was skipped."""

    root: Path  # folder that holds the class folders
    layout: Layout
    records: list[Record]
    skipped: list[str] = field(default_factory=list)  # non-image files (relative paths)
    synthetic: bool = False

    @property
    def classes(self) -> tuple[str, ...]:
        return self.layout.classes

    def counts(self) -> dict[str, int]:
        c = Counter(r.label for r in self.records)
        return {k: c.get(k, 0) for k in self.classes}

    def labels(self, records: Sequence[Record] | None = None) -> torch.Tensor:
        recs = self.records if records is None else records
        return torch.tensor([self.layout.label_of(r.label) for r in recs], dtype=torch.long)

    def describe(self) -> str:
        tag = "SYNTHETIC data" if self.synthetic else "data"
        counts = ", ".join(f"{k} {v}" for k, v in self.counts().items())
        return (
            f"{tag}: {self.root} (layout {self.layout.name}; {len(self.records)} images: {counts})"
        )


def find_synthetic_marker(path: Path) -> dict | None:
    """The synthetic-data marker in ``path`` or up to two parents, if any."""
    for p in (path, *list(path.parents)[:2]):
        marker = p / SYNTHETIC_MARKER
        if marker.is_file():
            try:
                return json.loads(marker.read_text())
            except (OSError, ValueError):
                return {"synthetic": True}
    return None


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _matches(folder: Path, layout: Layout) -> bool:
    dirs = _class_dirs(folder)
    return bool(dirs) and all(layout.class_of(d.name) is not None for d in dirs)


def resolve_root(
    root: str | Path, layout: str | Layout = "auto", variant: str | None = None
) -> tuple[Path, Layout]:
    """Find the folder holding the class folders and the layout that names them.

    ``root`` may be the data-set root (``.../leukemia`` with ``Original/`` and ``Segmented/``),
    a variant folder, or the class-folder parent itself. ``variant`` picks a sub-folder
    (e.g. ``Segmented``); by default the first of the layout's ``subdirs`` that exists.
    """
    base = Path(root).expanduser()
    if not base.exists():
        raise DataError(f"data folder {base} does not exist; pass the folder that holds the images")
    if not base.is_dir():
        raise DataError(f"data path {base} is a file; pass the folder that holds the images")
    if isinstance(layout, Layout):
        candidates = [layout]
    elif layout == "auto":
        user = base / LAYOUT_FILE
        candidates = [load_layout_file(user)] if user.is_file() else list(BUILTIN_LAYOUTS.values())
    else:
        candidates = [get_layout(layout)]

    for lay in candidates:
        subdirs = (variant,) if variant else lay.subdirs
        for folder in [base / s for s in subdirs if s] + [base]:
            if folder.is_dir() and _matches(folder, lay):
                return folder, lay
    if variant and not (base / variant).is_dir():
        raise DataError(f"{base} has no sub-folder {variant!r}")
    # Nothing matched cleanly: explain what is there.
    for lay in candidates:
        for folder in [base / s for s in lay.subdirs] + [base]:
            if not folder.is_dir():
                continue
            dirs = _class_dirs(folder)
            known = [d for d in dirs if lay.class_of(d.name)]
            unknown = [d.name for d in dirs if not lay.class_of(d.name)]
            if known and unknown:
                raise DataError(
                    f"unknown class folder(s) {unknown} in {folder}; layout {lay.name!r} expects "
                    f"{sorted(lay.folders)}. Remove them or declare a layout (--layout FILE.toml)"
                )
    names = [d.name for d in _class_dirs(base)]
    raise DataError(
        f"no known class folders under {base} (found {names or 'no folders'}); expected the "
        "primary layout (Original/Benign, ...), the external layout (Blood cell Cancer [ALL]/...), "
        "or a layout file (--layout FILE.toml)"
    )


def scan(
    root: str | Path, layout: str | Layout = "auto", variant: str | None = None
) -> DatasetIndex:
    """List every image under the class folders; non-image files are skipped with a warning."""
    folder, lay = resolve_root(root, layout, variant)
    records: list[Record] = []
    skipped: list[str] = []
    present: set[str] = set()
    for d in _class_dirs(folder):
        cls = lay.class_of(d.name)
        present.add(cls)
        for f in sorted(p for p in d.rglob("*") if p.is_file()):
            rel = f.relative_to(folder).as_posix()
            if f.name.lower() in _IGNORED_NAMES or f.name.startswith("."):
                continue
            if is_image_name(f):
                records.append(Record(rel, cls))
            else:
                skipped.append(rel)
    missing = [c for c in lay.classes if c not in present]
    if missing:
        raise DataError(
            f"{folder} lacks class folder(s) for {missing}; layout {lay.name!r} expects "
            f"{sorted(lay.folders)}"
        )
    counts = Counter(r.label for r in records)
    empty = [c for c in lay.classes if counts.get(c, 0) == 0]
    if empty:
        raise DataError(
            f"class(es) {empty} have no images under {folder}; add images or remove the class"
        )
    if skipped:
        shown = ", ".join(skipped[:5]) + (
            f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        )
        log.warning("skipped %d non-image file(s) under %s: %s", len(skipped), folder, shown)
    synthetic = find_synthetic_marker(folder) is not None
    return DatasetIndex(folder, lay, records, skipped, synthetic)


SHOWN_BAD_FILES = 20


def unreadable_message(
    root: Path, failures: Sequence[tuple[Record, str]], can_skip: bool = False
) -> str:
    """One line naming every unreadable file (the first 20, and how many more), and what to do:
    a user fixing them one run at a time would otherwise meet them one by one."""
    shown = "; ".join(msg for _, msg in failures[:SHOWN_BAD_FILES])
    more = len(failures) - SHOWN_BAD_FILES
    head = f"{len(failures)} image file(s) under {root} cannot be read: {shown}"
    tail = f" ... and {more} more" if more > 0 else ""
    todo = f"; `nalln data check {root}` lists every file's status"
    if can_skip:
        todo += ", or pass --skip-unreadable to go on without them"
    return head + tail + todo


def load_readable(
    index: DatasetIndex,
    records: Sequence[Record],
    size: int,
    progress: bool = True,
    desc: str = "loading images",
    *,
    skip_unreadable: bool = False,
    can_skip: bool = False,
) -> tuple[torch.Tensor, list[Record], list[tuple[Record, str]]]:
    """Decode ``records``: ``(images, the records decoded, (record, why) for the others)``.

    Every file is tried before giving up, so that one error names all the bad ones; with
    ``skip_unreadable`` they are left out instead (``can_skip``: the command has that flag).
    """
    out = torch.empty((len(records), 3, size, size), dtype=torch.uint8)
    kept: list[Record] = []
    failures: list[tuple[Record, str]] = []
    for r in tqdm(records, desc=desc, disable=not progress, unit="img", leave=False):
        try:
            out[len(kept)] = load_image(index.root / r.path, size)
        except DataError as exc:
            failures.append((r, str(exc)))
            continue
        kept.append(r)
    if failures and not skip_unreadable:
        raise DataError(unreadable_message(index.root, failures, can_skip))
    return out[: len(kept)], kept, failures


def load_images(
    index: DatasetIndex,
    records: Sequence[Record],
    size: int,
    progress: bool = True,
    desc: str = "loading images",
) -> torch.Tensor:
    """Decode ``records`` into one ``[N, 3, size, size]`` uint8 tensor (every bad file named)."""
    return load_readable(index, records, size, progress, desc)[0]


def drop_unreadable(
    index: DatasetIndex, size: int, progress: bool = True
) -> tuple[DatasetIndex, list[tuple[Record, str]]]:
    """``index`` without the files that cannot be decoded (``--skip-unreadable`` of train, which
    must know them before it splits: a split manifest lists only usable images)."""
    _, kept, failures = load_readable(
        index, index.records, size, progress, "checking images", skip_unreadable=True
    )
    if not failures:
        return index, []
    return DatasetIndex(index.root, index.layout, kept, index.skipped, index.synthetic), failures


def skipped_message(root: Path, failures: Sequence[tuple[Record, str]]) -> str:
    names = [r.path for r, _ in failures]
    more = f" and {len(names) - SHOWN_BAD_FILES} more" if names[SHOWN_BAD_FILES:] else ""
    return (
        f"skipped {len(names)} unreadable image file(s) (--skip-unreadable): "
        + ", ".join(names[:SHOWN_BAD_FILES])
        + more
        + f"; `nalln data check {root}` says why"
    )
