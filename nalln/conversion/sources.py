"""What ``convert`` and ``simulate`` start from: a trained run, or a NIR file/folder.

A run gives the torch model (the reference), its data set, split manifest and preprocessing; a
NIR graph written by another tool gives only the graph, so its reference is our float64
simulation of the NIR semantics and its images come from ``--data``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nalln.conversion.export import Exported, export_model
from nalln.conversion.fold import mean_gates, static_se_model
from nalln.conversion.nir_io import MANIFEST, Artefact, read_artefact
from nalln.conversion.semantics import Choices, record_choices
from nalln.data.dataset import DatasetIndex, load_images, scan
from nalln.data.splits import read_manifest
from nalln.data.transforms import Preprocess, to_float
from nalln.errors import NallnError
from nalln.inference import predict_logits
from nalln.ir.se_mode import SEMode
from nalln.models.blocks import se_blocks
from nalln.run_data import labels_of, run_index, split_records, subset
from nalln.runs import LoadedModel, load_model

SE_GATE_IMAGES = 256  # training images that calibrate the static SE gates


@dataclass
class Source:
    """A trained run (``loaded``) or a NIR artefact (``artefact``); exactly one is set."""

    path: Path
    loaded: LoadedModel | None = None
    artefact: Artefact | None = None

    @property
    def synthetic(self) -> bool:
        if self.loaded is not None:
            return self.loaded.synthetic
        return bool(self.artefact.info.get("synthetic", False))

    @property
    def class_names(self) -> tuple[str, ...] | None:
        if self.loaded is not None:
            return self.loaded.class_names
        names = self.artefact.info.get("class_names")
        return tuple(names) if names else None


def is_nir_path(p: Path) -> bool:
    return (p.is_file() and p.suffix.lower() in (".nir", ".h5", ".hdf5")) or (
        p.is_dir() and (p / MANIFEST).is_file()
    )


def load_source(path: str | Path) -> Source:
    p = Path(path).expanduser()
    if not p.exists():
        raise NallnError(f"{p} does not exist; pass a run folder, a checkpoint or a .nir file")
    if is_nir_path(p):
        return Source(p, artefact=read_artefact(p))
    if p.is_file() and p.suffix.lower() != ".safetensors":
        return Source(p, artefact=read_artefact(p))  # read_graph explains what is wrong
    return Source(p, loaded=load_model(p, "best", "cpu"))


def with_choices(source: Source, choices: Choices | None) -> Source:
    """A NIR source with the user's semantics flags recorded in its graph
    (:func:`~nalln.conversion.semantics.record_choices`); a run records its own."""
    if choices is None or not choices.given:
        return source
    if source.loaded is not None:
        raise NallnError(
            "--reset, --spikes, --v-min and --dt are for NIR graphs from other tools; a run's "
            "export records its own (reset zero, one spike per step, no floor, its dt)"
        )
    return Source(source.path, artefact=record_choices(source.artefact, choices))


def preprocess_for(source: Source) -> nn.Module:
    if source.loaded is not None:
        return source.loaded.preprocess
    norm = source.artefact.info.get("normalisation")
    if norm:
        return Preprocess.from_meta(norm)
    return _Unit()


class _Unit(nn.Module):
    """Foreign graphs without recorded preprocessing get images scaled to [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_float(x)


@torch.no_grad()
def normalised(source: Source, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    pre = preprocess_for(source)
    return torch.cat([pre(images[i : i + batch]) for i in range(0, len(images), batch)])


def graph_input_shape(source: Source) -> tuple[int, ...]:
    """The shape one input of the network has (without batch and time)."""
    if source.loaded is not None:
        return (3, source.loaded.image_size, source.loaded.image_size)
    from nalln.conversion.plan import lower

    return tuple(lower(source.artefact, num_steps=1).input_shape)


IMAGE_CHANNELS = {1: "grayscale", 3: "RGB"}


def input_size(source: Source) -> int:
    """The side of the square images a run or an image graph ([1 or 3, S, S]) takes."""
    if source.loaded is not None:
        return source.loaded.image_size
    shape = graph_input_shape(source)
    if len(shape) != 3 or shape[1] != shape[2] or shape[0] not in IMAGE_CHANNELS:
        raise NallnError(
            f"the graph's input {list(shape)} is not a square grayscale or RGB image "
            "([1 or 3, S, S]), so image folders cannot feed it: pass --inputs X.npz"
        )
    return int(shape[1])


def as_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB uint8 images [N, 3, S, S] -> ``channels`` (1: ITU-R 601-2 luma, rounded)."""
    if channels == 3:
        return images
    luma = torch.tensor([299, 587, 114], dtype=torch.int32).view(1, 3, 1, 1)
    return (
        ((images.to(torch.int32) * luma).sum(1, keepdim=True) + 500)
        .div(1000, rounding_mode="floor")
        .to(torch.uint8)
    )


def load_split(
    source: Source,
    data: str | Path | None,
    split: str,
    n: int | None,
    progress: bool,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None, DatasetIndex]:
    """(normalised images, labels, index) for ``n`` images of a run's split, or of ``--data``
    (a NIR graph has no split: a pseudo-random subset chosen by ``seed``). Labels are ``None``
    for a graph that does not record its classes: the folders' classes are not its classes."""
    if source.loaded is not None:
        index = run_index(source.loaded, data)
        records = subset(split_records(source.loaded, index, split), n, seed)
    else:
        if data is None:
            raise NallnError(NEEDS_INPUTS)
        size = input_size(source)  # before scanning: an event graph cannot take images
        index = scan(data)
        records = subset(list(index.records), n, seed)
    if source.loaded is not None:
        size = input_size(source)
    images = load_images(index, records, size, progress, f"loading {len(records)} images")
    if source.loaded is None:
        images = as_channels(images, graph_input_shape(source)[0])
        labels = labels_of(records, source.class_names, index) if source.class_names else None
    else:
        labels = labels_of(records, source.class_names, index)
    return normalised(source, images), labels, index


PASS_INPUTS = (
    "pass --inputs X.npz (any input shape) or --data ROOT (image folders, for a grayscale or RGB "
    "image graph)"
)
NEEDS_INPUTS = f"a NIR graph runs on example inputs: {PASS_INPUTS}"


@dataclass
class Prepared:
    """The export of a run in one SE mode, with its torch reference model."""

    exported: Exported
    reference: nn.Module
    static_se: dict[str, Any] = field(default_factory=dict)


def export_meta(loaded: LoadedModel) -> dict[str, Any]:
    return {
        "class_names": list(loaded.class_names),
        "normalisation": dict(loaded.run_meta.normalisation),
        "model_name": loaded.run_meta.model_name,
        "model_config": dict(loaded.run_meta.model_config),
        "checkpoint": str(loaded.checkpoint.path),
        "synthetic": loaded.synthetic,
    }


@torch.no_grad()
def prepare(
    loaded: LoadedModel,
    se: SEMode,
    data: str | Path | None,
    progress: bool = False,
    train_x: torch.Tensor | None = None,
) -> Prepared:
    """Export the run's model; for static SE calibrate the gates and measure the accuracy change
    on the validation split (dynamic vs static model, same images)."""
    model = loaded.model.eval()
    meta = export_meta(loaded)
    if se is SEMode.HYBRID or not se_blocks(model):
        return Prepared(export_model(model, se_mode=se, meta=meta), model)
    index = run_index(loaded, data)
    if train_x is None:
        train_x, _ = training_images(loaded, index, SE_GATE_IMAGES, progress)
    gates = mean_gates(model, train_x[:SE_GATE_IMAGES], progress=progress)
    static = static_se_model(model, gates)
    info: dict[str, Any] = {"calibration_images": int(min(len(train_x), SE_GATE_IMAGES))}
    val = [r for r in read_manifest(loaded.run.splits).get("val", [])] if loaded.run else []
    known = {r.path for r in index.records}
    val = [r for r in val if r.path in known]
    if val:
        images = load_images(index, val, loaded.image_size, progress, "loading val images")
        y = labels_of(val, loaded.class_names, index)
        dyn = predict_logits(model, loaded.preprocess, images).argmax(1)
        sta = predict_logits(static, loaded.preprocess, images).argmax(1)
        info.update(
            {
                "val_images": len(val),
                "val_accuracy_dynamic": float((dyn == y).double().mean()),
                "val_accuracy_static": float((sta == y).double().mean()),
                "val_prediction_agreement": float((dyn == sta).double().mean()),
            }
        )
        info["val_accuracy_change"] = info["val_accuracy_static"] - info["val_accuracy_dynamic"]
    meta = {**meta, "static_se": {**info, "gates": {k: v.tolist() for k, v in gates.items()}}}
    return Prepared(
        export_model(model, se_mode=SEMode.STATIC, gates=gates, meta=meta), static, info
    )


def training_images(
    loaded: LoadedModel, index: DatasetIndex, n: int, progress: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` normalised training-split images (calibration data) and their labels."""
    records = subset(split_records(loaded, index, "train"), n, seed=1)
    images = load_images(index, records, loaded.image_size, progress, "loading calibration images")
    src = Source(Path("."), loaded=loaded)
    return normalised(src, images), labels_of(records, loaded.class_names, index)
