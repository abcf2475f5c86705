"""Folder layouts of the ALL data sets, with labels mapped by class *name*.

The external set's folders sort as Benign, Pre-B, Pro-B, early Pre-B; mapping by sorted position
would silently swap Early and Pre-B. Every layout here maps folder names to canonical classes.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from nalln.errors import DataError

CANONICAL_CLASSES: tuple[str, ...] = ("Benign", "Early", "Pre", "Pro")


def normalise_name(name: str) -> str:
    """Case-, space- and punctuation-insensitive key for folder names."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class Layout:
    """How a data set stores its classes.

    ``folders`` maps a class-folder name to a class in ``classes``; ``subdirs`` are folders
    under the data-set root in which the class folders may live (first match wins).
    """

    name: str
    classes: tuple[str, ...]
    folders: dict[str, str]
    subdirs: tuple[str, ...] = ()
    description: str = ""
    _keys: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise DataError(f"layout {self.name!r}: classes must be at least 2 distinct names")
        for folder, cls in self.folders.items():
            if cls not in self.classes:
                raise DataError(
                    f"layout {self.name!r}: folder {folder!r} maps to unknown class {cls!r}; "
                    f"classes are {', '.join(self.classes)}"
                )
        missing = set(self.classes) - set(self.folders.values())
        if missing:
            raise DataError(f"layout {self.name!r}: no folder for class(es) {sorted(missing)}")
        self._keys.update({normalise_name(f): c for f, c in self.folders.items()})

    def class_of(self, folder_name: str) -> str | None:
        return self._keys.get(normalise_name(folder_name))

    def label_of(self, class_name: str) -> int:
        return self.classes.index(class_name)


PRIMARY = Layout(
    name="primary",
    classes=CANONICAL_CLASSES,
    folders={"Benign": "Benign", "Early": "Early", "Pre": "Pre", "Pro": "Pro"},
    subdirs=("Original", "Segmented"),
    description="Ghaderzadeh et al. 2022 (Kaggle mehradaria/leukemia): Original|Segmented/<class>",
)

EXTERNAL = Layout(
    name="external",
    classes=CANONICAL_CLASSES,
    folders={
        "Benign": "Benign",
        "[Malignant] early Pre-B": "Early",
        "[Malignant] Pre-B": "Pre",
        "[Malignant] Pro-B": "Pro",
    },
    subdirs=("Blood cell Cancer [ALL]",),
    description="Hosseini et al. 2023 (Kaggle blood-cell-cancer-all-4class)",
)

BUILTIN_LAYOUTS: dict[str, Layout] = {PRIMARY.name: PRIMARY, EXTERNAL.name: EXTERNAL}
LAYOUT_FILE = "nalln-layout.toml"


def load_layout_file(path: str | Path) -> Layout:
    """Read a user layout: ``name``, ``classes = [...]``, ``[folders]`` table, optional ``subdirs``.

    Example::

        name = "c-nmc"
        classes = ["hem", "all"]
        subdirs = ["C-NMC_training_data/fold_0"]
        [folders]
        hem = "hem"
        all = "all"
    """
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"layout file {p} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"layout file {p} is not valid TOML: {exc}") from None
    for key in ("classes", "folders"):
        if key not in raw:
            raise DataError(f"layout file {p} lacks the key {key!r}; see docs/data.md")
    if not isinstance(raw["folders"], dict):
        raise DataError(f"layout file {p}: 'folders' must be a table of folder = class")
    return Layout(
        name=str(raw.get("name", p.stem)),
        classes=tuple(str(c) for c in raw["classes"]),
        folders={str(k): str(v) for k, v in raw["folders"].items()},
        subdirs=tuple(str(s) for s in raw.get("subdirs", ())),
        description=str(raw.get("description", f"user layout from {p}")),
    )


def get_layout(spec: str) -> Layout:
    """A built-in layout by name, or a layout TOML file by path."""
    if spec in BUILTIN_LAYOUTS:
        return BUILTIN_LAYOUTS[spec]
    if spec.endswith(".toml") or Path(spec).is_file():
        return load_layout_file(spec)
    raise DataError(
        f"unknown layout {spec!r}; use one of {', '.join(BUILTIN_LAYOUTS)} or a layout .toml file"
    )
