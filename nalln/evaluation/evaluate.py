"""``nalln evaluate``: metrics with bootstrapped CIs on a split of the training data set or on
an external data set, written as JSON, Markdown, CSV and PNG."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from nalln.data.dataset import DatasetIndex, Record, load_readable, scan, skipped_message
from nalln.data.splits import check_manifest, read_manifest
from nalln.distributed.collect import agree, gather_shards, sequence_shard, world_fits
from nalln.distributed.world import World, current
from nalln.errors import DataError, NallnError
from nalln.evaluation.bootstrap import BootstrapSpec, bootstrap_metrics
from nalln.evaluation.metrics import confusion_matrix, metrics_from_confusion
from nalln.evaluation.plots import plot_confusion_matrix
from nalln.evaluation.report import build_metrics_json, metrics_markdown
from nalln.inference import pick_device, predict_logits
from nalln.io import write_csv, write_frame, write_json, write_text
from nalln.run_data import labels_of
from nalln.runs import LoadedModel, load_model

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    out: Path
    files: dict[str, Path]

    @property
    def per_class(self) -> pd.DataFrame:
        """One row per class: precision, recall, F1 with their CIs, and support."""
        return per_class_frame(self.metrics)

    @property
    def confusion(self) -> pd.DataFrame:
        """Counts: rows the true class, columns the predicted one."""
        return confusion_frame(self.metrics)


def per_class_frame(m: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for cls, r in m["per_class"].items():
        row: dict[str, Any] = {"class": cls}
        for k in ("precision", "recall", "f1"):
            row[k] = r[k]
            row[f"{k}_ci_low"], row[f"{k}_ci_high"] = r[f"{k}_ci"]
        row["support"] = r["support"]
        rows.append(row)
    return pd.DataFrame(rows)


def confusion_frame(m: dict[str, Any]) -> pd.DataFrame:
    cm = m["confusion_matrix"]
    frame = pd.DataFrame(cm["rows_true_cols_predicted"], columns=cm["labels"])
    frame.insert(0, "true\\predicted", cm["labels"])
    return frame


def select_records(
    loaded: LoadedModel,
    data: str | Path | None,
    split: str,
    external: str | Path | None,
    layout: str = "auto",
) -> tuple[DatasetIndex, list[Record], str]:
    """The images to evaluate and a name for them (``test``, ``val``, ``external`` ...)."""
    if external is not None:
        index = scan(external, layout)
        return index, list(index.records), "external"
    if loaded.run is None or not loaded.run.splits.is_file():
        raise NallnError(
            "evaluating a split needs the run folder (it holds splits.csv); pass RUN instead of a "
            "checkpoint file, or use --external ROOT to evaluate a whole data set"
        )
    src = loaded.run_meta.data
    index = scan(src.require_root(data), src.layout if layout == "auto" else layout, src.variant)
    splits = read_manifest(loaded.run.splits)
    if split not in splits:
        raise NallnError(f"unknown split {split!r}; use train, val or test")
    check_manifest(index, splits, loaded.run.splits)
    if not splits[split]:
        raise NallnError(f"the {split} split of this run is empty")
    return index, splits[split], split


def class_labels(
    records: list[Record], class_names: tuple[str, ...], index: DatasetIndex
) -> np.ndarray:
    return labels_of(records, class_names, index).numpy()


def evaluate(
    run: str | Path,
    data: str | Path | None = None,
    *,
    split: str = "test",
    external: str | Path | None = None,
    out: str | Path | None = None,
    layout: str = "auto",
    checkpoint: str = "best",
    bootstrap: BootstrapSpec = BootstrapSpec(),
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = True,
    skip_unreadable: bool = False,
    world: World | None = None,
) -> EvalResult:
    """Metrics of ``run`` on a split or an ``external`` data set; ``skip_unreadable``: leave
    undecodable images out (listed in ``source.skipped_unreadable``) instead of stopping."""
    world = current() if world is None else world
    progress = progress and world.main
    dev = world.device(pick_device(device))
    loaded = agree(lambda: load_model(run, checkpoint, dev), world)
    index, records, subset = agree(
        lambda: select_records(loaded, data, split, external, layout), world
    )
    class_labels(records, loaded.class_names, index)  # unknown classes: before decoding
    world_fits(len(records), world, f"images in {subset}")

    def my_share() -> tuple[list[Record], list, torch.Tensor | None]:
        """Under torchrun each rank decodes and predicts its contiguous share of the images."""
        images, mine, bad = load_readable(
            index,
            sequence_shard(records, world),
            loaded.image_size,
            progress,
            f"loading {subset} images",
            skip_unreadable=skip_unreadable,
            can_skip=True,
        )
        if not mine:
            return mine, bad, None
        logits = predict_logits(
            loaded.model, loaded.preprocess, images, batch_size, dev, progress, "evaluating"
        )
        return mine, bad, logits.cpu()

    shares = gather_shards([agree(my_share, world)], world)  # in rank order: one process's
    records = [r for mine, _, _ in shares for r in mine]
    bad = [b for _, bad_, _ in shares for b in bad_]
    if bad and world.main:
        log.warning("%s", skipped_message(index.root, bad))
    if not records:
        raise DataError(f"none of the {len(bad)} images of {subset} can be read")
    y_true = class_labels(records, loaded.class_names, index)
    logits = torch.cat([lg for _, _, lg in shares if lg is not None])
    probs = F.softmax(logits, dim=1).numpy()
    y_pred = probs.argmax(1)
    k = len(loaded.class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    point = metrics_from_confusion(cm)
    ci = bootstrap_metrics(y_true, y_pred, k, bootstrap)
    loss = float(F.cross_entropy(logits, torch.from_numpy(y_true)).item())
    # two facts (finding 3): real images stay real when the model learnt from synthetic ones
    synthetic, synthetic_model = index.synthetic, loaded.synthetic
    out_dir = (
        Path(out)
        if out
        else (loaded.run.path if loaded.run else Path(run).parent) / f"eval-{subset}"
    )
    source = {
        "checkpoint": str(loaded.checkpoint.path),
        "data": str(index.root),
        "layout": index.layout.name,
        "subset": subset,
        "model": loaded.run_meta.model_name,
        "nalln_version": loaded.run_meta.nalln_version,
        "skipped_unreadable": [r.path for r, _ in bad],
    }
    metrics = build_metrics_json(
        point, ci, cm, loaded.class_names, bootstrap, source, synthetic, loss, synthetic_model
    )
    title = f"Evaluation on {subset}"
    if synthetic:
        title += " (SYNTHETIC data)"
    elif synthetic_model:
        title += " (model trained on SYNTHETIC data)"
    if not world.main:  # rank 0 writes for the job
        return EvalResult(metrics, out_dir, {})
    files = {
        "metrics.json": write_json(out_dir / "metrics.json", metrics),
        "metrics.md": write_text(out_dir / "metrics.md", metrics_markdown(metrics, title)),
        "confusion_matrix.csv": write_frame(
            out_dir / "confusion_matrix.csv", confusion_frame(metrics)
        ),
        "per_class.csv": write_frame(out_dir / "per_class.csv", per_class_frame(metrics)),
        "confusion_matrix.png": plot_confusion_matrix(
            cm,
            loaded.class_names,
            out_dir / "confusion_matrix.png",
            title,
            synthetic,
            synthetic_model,
        ),
        "predictions.csv": write_csv(
            out_dir / "predictions.csv",
            [
                [r.path, r.label, loaded.class_names[p], *(f"{v:.6f}" for v in pr)]
                for r, p, pr in zip(records, y_pred, probs, strict=True)
            ],
            ["path", "true", "predicted", *(f"p_{c}" for c in loaded.class_names)],
        ),
    }
    return EvalResult(metrics, out_dir, files)
