"""Run configuration: data, training and augmentation settings as validated dataclasses.

A run's configuration is the defaults, overridden by a TOML/JSON file, overridden by command-line
flags, and stored in the run folder and in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nalln.errors import NallnError


@dataclass(frozen=True)
class AugmentConfig:
    """Training-split augmentation (the paper's spatial pipeline; photometric is optional)."""

    enabled: bool = True
    rotation_deg: float = 20.0
    translate: float = 0.2
    shear_deg: float = 20.0
    crop_scale_min: float = 0.8
    hflip: float = 0.5
    padding: str = "zeros"  # rotated/shifted-in pixels: zeros (torchvision), border, reflection
    photometric: bool = False
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.2
    hue: float = 0.02

    def __post_init__(self) -> None:
        if not 0 < self.crop_scale_min <= 1:
            raise NallnError("augment.crop_scale_min must lie in (0, 1]")
        if not 0 <= self.hflip <= 1:
            raise NallnError("augment.hflip is a probability in [0, 1]")
        if not 0 <= self.translate < 1:
            raise NallnError("augment.translate is a fraction in [0, 1)")
        if self.padding not in ("zeros", "border", "reflection"):
            raise NallnError("augment.padding must be zeros, border or reflection")


@dataclass(frozen=True)
class PreprocessConfig:
    """Fixed preprocessing applied identically at training and inference."""

    clahe: bool = False
    clahe_clip: float = 2.0
    clahe_grid: int = 8
    normalisation: str = "dataset"  # "dataset": train-split mean/std; "imagenet"; "none"

    def __post_init__(self) -> None:
        if self.normalisation not in ("dataset", "imagenet", "none"):
            raise NallnError("preprocess.normalisation must be 'dataset', 'imagenet' or 'none'")


@dataclass(frozen=True)
class TrainConfig:
    """The paper's protocol by default."""

    model: str = "neurallnet"
    model_config: dict[str, Any] = field(default_factory=dict)
    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    lr_decay_epochs: float = 20.0  # lr(epoch) = lr * 10 ** (-epoch / lr_decay_epochs)
    weight_decay: float = 0.0
    patience: int = 5
    lif_backend: str = "fused"  # "fused": one autograd node for all T steps; "snntorch": Leaky
    precise_bn_images: int = 0  # >0: re-estimate BatchNorm statistics per epoch on N images
    # under torchrun: BatchNorm statistics of the global batch, not of each rank's share
    sync_batchnorm: bool = False
    seed: int = 42
    device: str = "auto"
    layout: str = "auto"
    variant: str | None = None
    split_train: float = 0.8
    split_val: float = 0.1
    split_test: float = 0.1
    # exact and near duplicates (pHash within N bits, as `nalln data check`) share one split
    split_group_duplicates: bool = True
    split_duplicate_bits: int = 6
    # CSV with columns path,group (patient or slide id): images of one group share one split
    split_groups_file: str | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise NallnError(f"train.{name} must be at least 1")
        if self.lr <= 0 or self.lr_decay_epochs <= 0:
            raise NallnError("train.lr and train.lr_decay_epochs must be positive")
        if not 0 <= self.split_duplicate_bits <= 32:
            raise NallnError("train.split_duplicate_bits is a pHash distance between 0 and 32")
        if self.lif_backend not in ("fused", "snntorch"):
            raise NallnError("train.lif_backend must be 'fused' or 'snntorch'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        nested = {"augment": AugmentConfig, "preprocess": PreprocessConfig}
        for key, sub in nested.items():
            if key in d and isinstance(d[key], dict):
                d[key] = _build(sub, d[key], key)
        return _build(cls, d, "train")


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise NallnError(
            f"unknown {where} setting(s): {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    return cls(**d)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a plain dict (``[train]``-style tables or flat)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NallnError(f"config file {p} does not exist") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise NallnError(f"config file {p} cannot be parsed: {exc}") from None
    return data.get("train", data)


def parse_value(text: str) -> Any:
    """A ``--set key=value`` value: TOML scalar/array syntax, else a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(base: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` assignments to a nested dict (returns a new dict)."""
    out = json.loads(json.dumps(base))
    for item in assignments:
        if "=" not in item:
            raise NallnError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise NallnError(f"--set {key}: {part} is not a table")
        node[parts[-1]] = parse_value(value.strip())
    return out
