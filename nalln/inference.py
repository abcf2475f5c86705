"""Batched inference over in-memory images, shared by validation, evaluation and prediction."""

from __future__ import annotations

import os

import torch
from torch import nn
from tqdm.auto import tqdm

from nalln.data.transforms import Preprocess
from nalln.errors import DataError, NallnError

TF32_ENV = "NALLN_ALLOW_TF32"
"""Set to 1 to keep PyTorch's TF32 convolutions on CUDA (faster, not the CPU's numbers)."""


def pick_device(spec: str = "auto") -> torch.device:
    """``auto`` means CUDA when present; a CUDA device also gets full-precision float32.

    PyTorch runs cuDNN convolutions in TF32 by default. Spiking thresholds turn its ~1e-3
    relative error into flipped spikes: measured on an H200, TF32 moved the 224x224 logits by
    up to 0.14 and changed predictions, while float32 matched the CPU exactly
    (benchmarks/gpu_check.py, docs/benchmarks.md).
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        use_full_fp32_on_cuda()
    return device


def use_full_fp32_on_cuda() -> bool:
    """Turn TF32 off for cuDNN and matmuls unless ``NALLN_ALLOW_TF32=1``; returns TF32's state."""
    allow = os.environ.get(TF32_ENV, "0") == "1"
    torch.backends.cudnn.allow_tf32 = allow
    torch.backends.cuda.matmul.allow_tf32 = allow
    return allow


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
    the reference modules. Float images (taken as [0, 1]) holding NaN or infinity are refused:
    a spiking network turns them into silence and a confident-looking answer, not an error.
    """
    from nalln.models.neurallnet import NeurALLNet

    check_images(images, preprocess.mean.numel())
    was_training = model.training
    model.eval()
    if fast and isinstance(model, NeurALLNet):
        from nalln.models.fast import fast_predict_logits

        try:
            logits = fast_predict_logits(
                model, preprocess, images, batch_size, device, progress, desc
            )
        finally:
            model.train(was_training)
        return _finite(logits)
    outs = []
    starts = range(0, len(images), batch_size)
    for i in tqdm(starts, desc=desc, disable=not progress, unit="batch", leave=False):
        x = preprocess(images[i : i + batch_size].to(device))
        outs.append(model(x).float().cpu())
    model.train(was_training)
    if not outs:
        return torch.empty(0, 0)
    return _finite(torch.cat(outs))


def _finite(logits: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(logits).all():
        raise NallnError(
            "the model produced NaN or infinite logits: its weights are damaged or diverged; "
            "use another checkpoint"
        )
    return logits


def check_images(images: torch.Tensor, channels: int = 3) -> None:
    """``[N, channels, H, W]`` uint8, or float with only finite values; else a DataError."""
    if images.dim() != 4 or images.shape[1] != channels or min(images.shape[2:]) < 1:
        raise DataError(
            f"images must be a [N, {channels}, H, W] tensor with H, W >= 1; got "
            f"{list(images.shape)}"
        )
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise DataError(f"images must be uint8 (0-255) or float (0-1); got {images.dtype}")
    if images.is_floating_point() and not torch.isfinite(images).all():
        bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
        raise DataError(
            f"{bad} of {len(images)} image(s) contain NaN or infinite values; fix the images "
            "(a spiking network would answer silently and wrongly)"
        )
