"""``nalln predict``: class probabilities for image files, with image-quality screening.

Images that fail the quality check (too dark, over-exposed, blurred; nalln.data.quality) are
still classified but marked "needs manual review", as the paper recommends for under-illuminated
smears.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from nalln.data.images import is_image_name, load_image
from nalln.data.quality import quality_flags
from nalln.distributed.collect import agree, gather_shards, sequence_shard, world_fits
from nalln.distributed.world import current
from nalln.errors import DataError, NallnError
from nalln.inference import pick_device, predict_logits
from nalln.runs import LoadedModel, load_model

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    path: str
    predicted: str | None
    probabilities: dict[str, float] = field(default_factory=dict)
    quality: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def needs_review(self) -> bool:
        return bool(self.quality) or self.error is not None


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively) in the named folders."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_image_name(f))
            others = [f for f in p.rglob("*") if f.is_file() and not is_image_name(f)]
            if others:
                names = [str(f.relative_to(p)) for f in sorted(others)]
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if names[5:] else "")
                log.warning("skipped %d non-image file(s) in %s: %s", len(others), p, shown)
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise NallnError(f"{p} does not exist; pass image files or folders")
    if not out:
        raise NallnError("no images found in " + ", ".join(str(p) for p in paths))
    return out


def predict_files(
    loaded: LoadedModel,
    files: Sequence[Path],
    *,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    skip_unreadable: bool = False,
) -> list[Prediction]:
    reference = loaded.run_meta.image_reference
    size = loaded.image_size
    results: list[Prediction] = []
    images: list[torch.Tensor] = []
    slots: list[int] = []
    for f in files:
        try:
            img = load_image(f, size)
        except DataError as exc:
            if not skip_unreadable:
                raise DataError(f"{exc} (pass --skip-unreadable to classify the others)") from None
            log.warning("%s", exc)
            results.append(Prediction(str(f), None, error=str(exc)))
            continue
        slots.append(len(results))
        results.append(Prediction(str(f), None, quality=quality_flags(img, reference)))
        images.append(img)
    if images:
        logits = predict_logits(
            loaded.model, loaded.preprocess, torch.stack(images), batch_size, device
        )
        probs = F.softmax(logits, dim=1)
        for slot, pr in zip(slots, probs, strict=True):
            results[slot].predicted = loaded.class_names[int(pr.argmax())]
            results[slot].probabilities = {
                c: float(v) for c, v in zip(loaded.class_names, pr.tolist(), strict=True)
            }
    return results


def predict_paths(
    run: str | Path,
    paths: Sequence[str | Path],
    *,
    checkpoint: str = "best",
    device: str = "auto",
    skip_unreadable: bool = False,
) -> tuple[LoadedModel, list[Prediction]]:
    """Under torchrun each rank classifies a contiguous share of the files; every rank gets
    all predictions, in the order one process gives."""
    world = current()
    dev = world.device(pick_device(device))
    loaded = agree(lambda: load_model(run, checkpoint, dev), world)
    files = agree(lambda: collect_images(paths), world)
    world_fits(len(files), world, "images")
    mine = sequence_shard(files, world)
    preds = agree(
        lambda: predict_files(loaded, mine, device=dev, skip_unreadable=skip_unreadable), world
    )
    return loaded, gather_shards(preds, world)
