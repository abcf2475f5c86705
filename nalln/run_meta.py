"""Run metadata: what a checkpoint says about the model it holds, read and written here only.

A checkpoint stores its metadata as one JSON object (``nalln.checkpoint``); :class:`RunMeta`
is its typed form. ``from_dict`` checks what inference needs (an untrusted file may hold
anything) and keeps every key it does not model in ``extra``, so ``to_dict(from_dict(d)) == d``
for every checkpoint 0.1.0 wrote (those carry no ``meta_version``; they are version 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nalln.errors import CheckpointError, NallnError

META_VERSION = 2  # 1: nalln 0.1.0 (no version key); 2: adds ``meta_version``
REQUIRED = ("model_name", "model_config", "class_names", "normalisation")
GRID_KEY = "fixed_point_grid"  # the Loihi grid a fixed-point fine-tuned checkpoint records
FINETUNE_KEY = "fixed_point_finetune"  # what fine-tuning did, with which settings
_MODELLED = (
    "meta_version",
    "nalln_version",
    *REQUIRED,
    "image_reference",
    "train_config",
    "data",
    GRID_KEY,
    FINETUNE_KEY,
    "quantized",
)


@dataclass(frozen=True)
class DataSource:
    """Where the training data came from (``root`` None: not recorded)."""

    root: str | None = None
    layout: str = "auto"
    variant: str | None = None
    synthetic: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "layout": self.layout,
            "variant": self.variant,
            "synthetic": self.synthetic,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> DataSource:
        d = d or {}
        root = d.get("root")
        return cls(
            None if root is None else str(root),
            str(d.get("layout", "auto")),
            d.get("variant"),
            bool(d.get("synthetic", False)),
        )

    def require_root(self, data: str | Path | None) -> str | Path:
        """``data`` if given, else the recorded root: the one "no data root" check."""
        root = data if data is not None else self.root
        if root is None:
            raise NallnError("no data root recorded in the run; pass --data ROOT")
        return root


@dataclass(frozen=True)
class RunMeta:
    """The typed metadata of one checkpoint."""

    model_name: str
    model_config: Mapping[str, Any]
    class_names: tuple[str, ...]
    normalisation: Mapping[str, Any]
    data: DataSource = field(default_factory=DataSource)
    nalln_version: str | None = None
    image_reference: Mapping[str, Any] | None = None
    train_config: Mapping[str, Any] | None = None
    fixed_point_grid: Mapping[str, Any] | None = None  # FixedPointGrid.to_dict()
    fixed_point_finetune: Mapping[str, Any] | None = None
    quantized: str | None = None  # "int8" for `nalln quantize` copies
    extra: Mapping[str, Any] = field(default_factory=dict)  # training state and unknown keys
    version: int = META_VERSION

    @property
    def image_size(self) -> int:
        return int(self.model_config["image_size"])

    @property
    def synthetic(self) -> bool:
        """Whether the model was trained on synthetic data (not a fact about other data)."""
        return self.data.synthetic

    @property
    def preprocess(self) -> Mapping[str, Any]:
        return self.normalisation.get("preprocess", {})

    def train_setting(self, *path: str, default: Any = None) -> Any:
        """A nested value of the training configuration, e.g. ``("augment", "padding")``."""
        node: Any = self.train_config or {}
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                return default
            node = node[key]
        return node

    def evolve(self, **changes: Any) -> RunMeta:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The stored form (what :func:`nalln.checkpoint.save_checkpoint` writes)."""
        d: dict[str, Any] = {
            "meta_version": self.version,
            "nalln_version": self.nalln_version,
            "model_name": self.model_name,
            "model_config": dict(self.model_config),
            "class_names": list(self.class_names),
            "normalisation": dict(self.normalisation),
            "image_reference": self.image_reference,
            "train_config": self.train_config,
            "data": self.data.to_dict(),
        }
        if self.version < 2:
            del d["meta_version"]
        optional = {
            GRID_KEY: self.fixed_point_grid,
            FINETUNE_KEY: self.fixed_point_finetune,
            "quantized": self.quantized,
        }
        d.update({k: v for k, v in optional.items() if v is not None})
        for key in ("nalln_version", "image_reference", "train_config"):
            if d[key] is None:
                del d[key]
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str | Path = "checkpoint") -> RunMeta:
        """Typed metadata, or a :class:`CheckpointError` naming ``where`` and the bad key."""
        if not isinstance(d, Mapping):
            raise CheckpointError(f"{where}: its metadata is not a JSON object")
        for key in REQUIRED:
            if key not in d:
                raise CheckpointError(
                    f"{where} lacks '{key}' in its metadata; it was not written by `nalln train`"
                )
        names = d["class_names"]
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise CheckpointError(
                f"{where}: class_names must be a list of names, got {names!r:.80}"
            )
        for key in ("model_config", "normalisation"):
            if not isinstance(d[key], Mapping):
                raise CheckpointError(f"{where}: '{key}' in its metadata must be an object")
        if not isinstance(d.get("data", {}), Mapping):
            raise CheckpointError(f"{where}: 'data' in its metadata must be an object")
        version = d.get("meta_version", 1)
        if not isinstance(version, int) or not 1 <= version <= META_VERSION:
            raise CheckpointError(
                f"{where}: metadata version {version!r} is not one this nalln reads "
                f"(1-{META_VERSION}); upgrade nalln"
            )
        extra = {k: v for k, v in d.items() if k not in _MODELLED}
        quantized = d.get("quantized")
        return cls(
            model_name=str(d["model_name"]),
            model_config=d["model_config"],
            class_names=tuple(names),
            normalisation=d["normalisation"],
            data=DataSource.from_dict(d.get("data")),
            nalln_version=d.get("nalln_version"),
            image_reference=d.get("image_reference"),
            train_config=d.get("train_config"),
            fixed_point_grid=d.get(GRID_KEY),
            fixed_point_finetune=d.get(FINETUNE_KEY),
            quantized=None if quantized is None else str(quantized),
            extra=extra,
            version=int(version),
        )
