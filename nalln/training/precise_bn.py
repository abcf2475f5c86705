"""Precise BatchNorm statistics (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021).

BatchNorm's running statistics are an exponential average over the last few mini-batches. With
batches of 16 images and sparse spike inputs that estimate is noisy, and because a spiking
threshold turns scale errors into missing or extra spikes, the evaluated network changed a lot
from epoch to epoch (validation accuracy swinging by 10-20 points on the synthetic set). After each
epoch we re-estimate every BatchNorm's statistics as a plain average over many training batches,
augmented exactly as in training, with the weights frozen.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


@torch.no_grad()
def recompute_bn_stats(
    model: nn.Module,
    images: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 16,
    max_images: int = 1024,
    generator: torch.Generator | None = None,
) -> int:
    """Replace running mean/var of every BatchNorm by the average over ``max_images`` images.

    ``prepare`` turns a uint8 batch into network input (augmentation + preprocessing), so the
    statistics describe the same distribution the layers saw in training. Returns the number of
    images used (0 if the model has no BatchNorm).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or len(images) == 0:
        return 0
    momenta = [bn.momentum for bn in bns]
    was_training = model.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = plain mean over batches
    model.train()
    order = torch.randperm(len(images), generator=generator)[:max_images]
    device = next(model.parameters()).device
    used = 0
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        if len(idx) < 2:  # BatchNorm cannot take batch statistics of one sample
            break
        model(prepare(images[idx].to(device)))
        used += len(idx)
    for bn, m in zip(bns, momenta, strict=True):
        bn.momentum = m
    model.train(was_training)
    return used
