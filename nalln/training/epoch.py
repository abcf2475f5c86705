"""One training epoch over in-memory images: the batch loop every training mode shares
(``nalln train`` and fixed-point fine-tuning)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from nalln.distributed.collect import shard_range
from nalln.distributed.world import SINGLE, World
from nalln.errors import NallnError

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, _x: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def distillation(teacher: nn.Module, alpha: float, temperature: float = 2.0) -> LossFn:
    """Hinton et al. 2015: ``(1 - alpha) CE + alpha T^2 KL(teacher_T || student_T)``, the
    teacher run on the same (augmented) inputs; ``alpha = 0`` is plain cross-entropy."""

    def loss(logits: torch.Tensor, labels: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, labels)
        if alpha == 0:
            return ce
        with torch.no_grad():
            target = F.softmax(teacher(x) / temperature, dim=1)
        kl = F.kl_div(F.log_softmax(logits / temperature, dim=1), target, reduction="batchmean")
        return (1 - alpha) * ce + alpha * temperature**2 * kl

    return loss


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
    loss_fn: LossFn | None = None,
    world: World = SINGLE,
) -> EpochStats:
    """Training on ``images[order]`` in batches; ``prepare`` turns a uint8 batch into the
    model's input (augmentation and normalisation); ``loss_fn(logits, labels, inputs)``
    defaults to cross-entropy. A non-finite loss stops with the one-line message
    ``diverged(loss)``.

    Under torchrun (``world`` of W ranks, ``model`` wrapped in DistributedDataParallel) each
    batch of ``batch_size`` is the *global* batch: every rank prepares all of it with the same
    seeded augmentation, then runs its contiguous share (``batch_size / W`` images). DDP
    averages gradients over ranks, so each rank's mean loss is weighted by ``W * share / B``:
    the update is the gradient of the global batch's mean loss - what one process computes -
    also when the shares are uneven. A final batch smaller than W runs whole on every rank
    without gradient exchange (identical gradients everywhere).
    """
    loss_fn = loss_fn or cross_entropy
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(
        range(0, len(order), batch_size),
        desc=desc,
        disable=not progress or not world.main,
        unit="batch",
        leave=False,
    )
    for i in bar:
        idx = order[i : i + batch_size]
        y = labels[idx].to(device)
        x = prepare(images[idx].to(device))
        n = len(idx)
        shared = world.distributed and n >= world.size
        if shared:
            r = shard_range(n, world)
            x, y = x[r.start : r.stop], y[r.start : r.stop]
            net = model
        else:  # one process, or a remainder smaller than the world: no exchange needed
            net = model.module if isinstance(model, DistributedDataParallel) else model
        logits = net(x)
        loss = loss_fn(logits, y, x)
        hits = (logits.argmax(1) == y).sum()
        if shared:  # the global batch's loss and hits: one small all-reduce
            tally = torch.stack([loss.detach() * len(y), hits.to(loss)])
            torch.distributed.all_reduce(tally)
            batch_loss, hits = float(tally[0]) / n, tally[1]
        else:
            batch_loss = loss.item()
        if not math.isfinite(batch_loss):
            raise NallnError(diverged(batch_loss))
        optimizer.zero_grad(set_to_none=True)
        (loss * (len(y) * world.size / n) if shared else loss).backward()
        optimizer.step()
        loss_sum += batch_loss * n
        correct += int(hits)
        seen += n
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
    return EpochStats(loss_sum / max(seen, 1), correct / max(seen, 1), seen)
