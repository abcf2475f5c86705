"""One training epoch over in-memory images: the batch loop every training mode shares
(``nalln train`` and fixed-point fine-tuning)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from nalln.errors import NallnError


@dataclass(frozen=True)
class EpochStats:
    loss: float  # mean cross-entropy over the images seen
    accuracy: float
    images: int


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    order: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int,
    desc: str,
    diverged: Callable[[float], str],
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> EpochStats:
    """Cross-entropy training on ``images[order]`` in batches; ``prepare`` turns a uint8 batch
    into the model's input (augmentation and normalisation). A non-finite loss stops with the
    one-line message ``diverged(loss)``."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(
        range(0, len(order), batch_size), desc=desc, disable=not progress, unit="batch", leave=False
    )
    for i in bar:
        idx = order[i : i + batch_size]
        y = labels[idx].to(device)
        logits = model(prepare(images[idx].to(device)))
        loss = F.cross_entropy(logits, y)
        if not math.isfinite(loss.item()):
            raise NallnError(diverged(loss.item()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
    return EpochStats(loss_sum / max(seen, 1), correct / max(seen, 1), seen)
