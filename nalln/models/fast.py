"""Fast inference path: NeurALLNet with BatchNorm folded, the stem done once, in-place neurons.

What it saves over the reference model (each measured in docs/benchmarks.md):

* BatchNorm folded into every convolution (and the head's BatchNorm1d into ``fc1``): one pass
  fewer per layer and step.
* Direct coding: the stem convolution sees the same image at every step, so it runs once on
  ``[B, 3, H, W]``; its neurons read that one current T times without it being repeated.
* Neurons: :func:`nalln.models.fast_lif.lif_inference` (in place, no autograd) instead of
  snnTorch's per-step module graph.
* channels_last memory layout (measured faster for the 1x1 and depthwise convolutions on CPU).
* No autograd (``torch.inference_mode``).

The output equals the reference path: identical spikes up to float rounding of the folded
BatchNorm (tests/perf check the same predictions and logits within 1e-5).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from nalln.models.blocks import SpikingDSBlock, round_current
from nalln.models.fast_lif import lif_inference
from nalln.models.fold import fused_layer
from nalln.models.neurallnet import NeurALLNet
from nalln.models.neuron import LIFParameters


class _FastBlock(nn.Module):
    def __init__(self, block: SpikingDSBlock) -> None:
        super().__init__()
        self.dw = fused_layer(block.dw.conv, getattr(block.dw, "bn", None))
        self.pw = fused_layer(block.pw.conv, getattr(block.pw, "bn", None))
        self.se = copy.deepcopy(block.se)
        self.se_position = block.se_position


class FastNeurALLNet(nn.Module):
    """Inference-only copy of a :class:`NeurALLNet`: ``[B, C, H, W]`` -> logits ``[B, K]``.

    Build it from a trained (or fresh) model with :func:`fast_model`; later changes to the
    source model are not seen. Gradients are never computed.
    """

    def __init__(self, model: NeurALLNet, channels_last: bool = True) -> None:
        super().__init__()
        cfg = model.config
        self.config = cfg
        self.num_steps = cfg.num_steps
        self.lif = LIFParameters(cfg.tau, cfg.v_threshold, cfg.surrogate_alpha)
        self.channels_last = channels_last
        self.stem = fused_layer(model.stem.conv, getattr(model.stem, "bn", None))
        blocks = [b for _, b in model.named_blocks()]
        self.blocks = nn.ModuleList(_FastBlock(b) for b in blocks)
        head = model.head
        self.fc1 = fused_layer(head.fc1, head.bn) if head.fc1 is not None else None
        self.fc2 = copy.deepcopy(head.fc2)
        self.eval()
        self.requires_grad_(False)

    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step logits ``[T, B, K]``."""
        T, p = self.num_steps, self.lif
        s = lif_inference(self.stem(self._fmt(x)), T, p, constant=True)
        for blk in self.blocks:
            s = lif_inference(blk.dw(s), T, p)
            cur = blk.pw(s)
            if getattr(blk.se, "replaces_product", False):  # on-chip SE: the whole gated current
                cur = blk.se(cur)
            elif blk.se is not None and blk.se_position == "current":
                cur.mul_(blk.se.gate(cur)[:, :, None, None])
                scale = getattr(blk.se, "current_scale", None)  # set: tuned for hybrid fixed point
                if scale is not None:
                    cur = round_current(cur, scale)
            s = lif_inference(cur, T, p)
            if blk.se is not None and blk.se_position == "spikes":
                s = s * blk.se.gate(s)[:, :, None, None]
        z = s.mean(dim=(2, 3))
        if self.fc1 is not None:
            z = lif_inference(self.fc1(z), T, p)
        return self.fc2(z).view(T, -1, self.fc2.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_steps(x).mean(0)


def fast_model(model: nn.Module, channels_last: bool | None = None) -> FastNeurALLNet:
    """The fast inference path for ``model`` (on ``model``'s device).

    ``channels_last`` defaults to True on the CPU (measured faster) and False on CUDA.
    """
    if isinstance(model, FastNeurALLNet):
        return model
    if not isinstance(model, NeurALLNet):
        raise TypeError(f"fast_model needs a NeurALLNet, got {type(model).__name__}")
    device = next(model.parameters()).device
    if channels_last is None:
        channels_last = device.type == "cpu"
    return FastNeurALLNet(model, channels_last).to(device)


@torch.inference_mode()
def fast_predict_logits(
    model: nn.Module,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "inference",
) -> torch.Tensor:
    """Drop-in for :func:`nalln.inference.predict_logits` that runs the fast path.

    ``images`` are uint8 ``[N, 3, H, W]``; returns float logits ``[N, K]`` on the CPU.
    """
    fast = fast_model(model)
    outs = []
    starts = range(0, len(images), batch_size)
    for i in tqdm(starts, desc=desc, disable=not progress, unit="batch", leave=False):
        x = preprocess(images[i : i + batch_size].to(device))
        outs.append(fast(x).float().cpu())
    if not outs:
        return torch.empty(0, 0)
    return torch.cat(outs)


@torch.inference_mode()
def predict_files(
    model: nn.Module,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    paths: Sequence[str | Path],
    image_size: int,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> torch.Tensor:
    """Logits ``[N, K]`` for image files, decoded one batch at a time (bounded memory).

    Unreadable files raise :class:`nalln.errors.DataError` naming the file, before any
    prediction of that batch is made.
    """
    from nalln.data.images import load_image

    fast = fast_model(model)
    outs = []
    starts = range(0, len(paths), batch_size)
    bar = tqdm(total=len(paths), desc="predicting", disable=not progress, unit="img", leave=False)
    for i in starts:
        chunk = paths[i : i + batch_size]
        batch = torch.stack([load_image(p, image_size) for p in chunk])
        outs.append(fast(preprocess(batch.to(device))).float().cpu())
        bar.update(len(chunk))
    bar.close()
    if not outs:
        return torch.empty(0, 0)
    return torch.cat(outs)
