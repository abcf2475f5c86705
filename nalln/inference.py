"""Batched inference over in-memory images, shared by validation, evaluation and prediction."""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from nalln.data.transforms import Preprocess


def pick_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    preprocess: Preprocess,
    images: torch.Tensor,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "inference",
    fast: bool = True,
) -> torch.Tensor:
    """Logits ``[N, classes]`` for uint8 images ``[N, 3, H, W]`` (model in eval mode).

    NeurALLNet runs through the fast inference path (BatchNorm folded, in-place neurons;
    nalln.models.fast), which gives the reference path's predictions; ``fast=False`` forces
    the reference modules.
    """
    from nalln.models.neurallnet import NeurALLNet

    if fast and isinstance(model, NeurALLNet):
        from nalln.models.fast import fast_predict_logits

        was_training = model.training
        model.eval()
        try:
            return fast_predict_logits(
                model, preprocess, images, batch_size, device, progress, desc
            )
        finally:
            model.train(was_training)
    was_training = model.training
    model.eval()
    outs = []
    starts = range(0, len(images), batch_size)
    for i in tqdm(starts, desc=desc, disable=not progress, unit="batch", leave=False):
        x = preprocess(images[i : i + batch_size].to(device))
        outs.append(model(x).float().cpu())
    model.train(was_training)
    if not outs:
        return torch.empty(0, 0)
    return torch.cat(outs)
