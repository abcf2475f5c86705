r"""Temporal-fusion Grad-CAM for a time-folded spiking network, as the paper describes it.

For a target layer whose output at step :math:`t` is :math:`A_t \in \mathbb{R}^{C\times h\times w}`
and a class score :math:`y^c` (the logit averaged over the :math:`T` steps):

.. math::
    \bar A = \frac{1}{T}\sum_t A_t, \qquad
    \bar G = \frac{1}{T}\sum_t \frac{\partial y^c}{\partial A_t}, \qquad
    \alpha_k = \frac{1}{hw}\sum_{i,j} \bar G_{k,i,j}, \qquad
    L^c = \mathrm{ReLU}\Big(\sum_k \alpha_k \bar A_k\Big).

Gradients flow through the spikes by the ATan surrogate: the model is put in training mode (as
the paper does, so that SpikingJelly-style surrogates are active) with every BatchNorm kept in
evaluation mode, so that the running statistics are used and never updated; all modes are
restored afterwards. The activations are the layer's direct outputs (for the default layer, the
refinement block's last pointwise convolution, before its BatchNorm), not membrane potentials.

A layer computed once before the time fold (the stem) has a single activation for all steps; its
gradient is the sum over steps, so :math:`\bar G` is that sum divided by :math:`T`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nalln.errors import NallnError


@dataclass
class CamResult:
    """Grad-CAM of a batch: raw maps at the layer's resolution and what they explain."""

    maps: torch.Tensor  # [B, h, w], >= 0, not normalised
    target: torch.Tensor  # [B] class index explained
    logits: torch.Tensor  # [B, K]
    layer: str
    weights: torch.Tensor  # [B, C] channel weights alpha
    num_steps: int

    def upsampled(self, size: tuple[int, int]) -> torch.Tensor:
        """Maps resized (bilinear) to ``size`` and min-max scaled to [0, 1] per image, as
        pytorch-grad-cam displays them (a spatially constant map becomes all zeros)."""
        up = F.interpolate(self.maps[:, None], size=size, mode="bilinear", align_corners=False)
        up = up[:, 0]
        lo = up.amin(dim=(1, 2), keepdim=True)
        hi = up.amax(dim=(1, 2), keepdim=True)
        return (up - lo) / (hi - lo + 1e-7)


def _candidate(module: nn.Module) -> bool:
    from nalln.models.blocks import SqueezeExcite
    from nalln.models.neuron import LIF

    return isinstance(module, nn.Conv2d | nn.BatchNorm2d | LIF | SqueezeExcite)


@torch.no_grad()
def feature_map_sizes(
    model: nn.Module, image_size: int, in_channels: int = 3
) -> dict[str, tuple[int, int]]:
    """``{layer: (h, w)}`` for the layers Grad-CAM can target (4-D output), in forward order."""
    found: dict[str, tuple[int, int]] = {}

    def record(name: str, out: object) -> None:  # a hook must return None (or replace output)
        if torch.is_tensor(out) and out.dim() == 4:
            found.setdefault(name, (int(out.shape[-2]), int(out.shape[-1])))

    hooks = [
        mod.register_forward_hook(lambda _m, _i, out, name=name: record(name, out))
        for name, mod in model.named_modules()
        if name and _candidate(mod)
    ]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, in_channels, image_size, image_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return found


def gradcam_layers(model: nn.Module, image_size: int, in_channels: int = 3) -> list[str]:
    """Names of the layers Grad-CAM can target: those whose output is a 4-D feature map."""
    return list(feature_map_sizes(model, image_size, in_channels))


AUTO_MIN_SIDE = 7
"""``--layer auto``: the deepest conv whose map is at least this wide (the paper's layer,
``refine.pw.conv``, is 7 x 7 at 224 px; at 64 px it is 2 x 2, too coarse to localise)."""


def auto_layer(model: nn.Module, sizes: dict[str, tuple[int, int]]) -> str:
    """The deepest convolution whose feature map (``sizes``, from :func:`feature_map_sizes`) is
    at least ``AUTO_MIN_SIDE`` on each side: the default layer at 224 px; else the first conv."""
    modules = dict(model.named_modules())
    convs = [n for n in sizes if isinstance(modules[n], nn.Conv2d)]
    if not convs:
        raise NallnError("the model has no convolution layer to explain")
    large = [n for n in convs if min(sizes[n]) >= AUTO_MIN_SIDE]
    return large[-1] if large else convs[0]


def default_layer(model: nn.Module) -> str:
    """The refinement block's last pointwise conv; without it, the last stage's."""
    if getattr(model, "refine", None) is not None:
        return "refine.pw.conv"
    stages = getattr(model, "stages", None)
    if stages is not None and len(stages):
        return f"stages.{len(stages) - 1}.pw.conv"
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise NallnError("the model has no convolution layer to explain")
    return convs[-1]


def check_layer(model: nn.Module, layer: str, valid: list[str]) -> nn.Module:
    if layer not in valid:
        raise NallnError(
            f"layer {layer!r} does not exist or has no feature-map output; valid layers: "
            + ", ".join(valid)
        )
    return dict(model.named_modules())[layer]


def temporal_gradcam(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    target: torch.Tensor | int | None = None,
    num_steps: int | None = None,
) -> CamResult:
    """Grad-CAM of ``layer`` for input ``x`` ``[B, C, H, W]`` (already preprocessed).

    ``target``: class index per image (or one for all); default the predicted class. The batch
    is explained in one pass: with BatchNorm in eval mode every image's score depends on its own
    activations only.
    """
    modules = dict(model.named_modules())
    if layer not in modules:
        raise NallnError(f"layer {layer!r} does not exist in the model")
    module = modules[layer]
    steps = int(num_steps if num_steps is not None else getattr(model, "num_steps", 1))
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    modes = {m: m.training for m in model.modules()}
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.eval()
        with torch.enable_grad():
            xin = x.detach().requires_grad_(True)
            logits = model(xin)
            if target is None:
                tgt = logits.argmax(1)
            elif isinstance(target, int):
                tgt = torch.full((x.shape[0],), target, dtype=torch.long, device=logits.device)
            else:
                tgt = target.to(logits.device).long()
            if len(captured) != 1:
                raise NallnError(
                    f"layer {layer!r} ran {len(captured)} times in one forward pass; pick a layer "
                    "that runs once"
                )
            act = captured[0]
            score = logits.gather(1, tgt[:, None]).sum()
            (grad,) = torch.autograd.grad(score, act)
    finally:
        handle.remove()
        for m, mode in modes.items():
            m.train(mode)
    batch = x.shape[0]
    act = act.detach()
    if act.dim() != 4:
        raise NallnError(f"layer {layer!r} outputs {act.dim()}-D tensors; Grad-CAM needs maps")
    if act.shape[0] == steps * batch:
        a_mean = act.reshape(steps, batch, *act.shape[1:]).mean(0)
        g_mean = grad.reshape(steps, batch, *grad.shape[1:]).mean(0)
    elif act.shape[0] == batch:  # computed once and repeated over the steps (direct coding)
        a_mean, g_mean = act, grad / steps
    else:
        raise NallnError(
            f"layer {layer!r} output has batch {act.shape[0]}, expected {batch} or "
            f"{steps * batch} (T x batch)"
        )
    weights = g_mean.mean(dim=(2, 3))
    cam = torch.relu((weights[:, :, None, None] * a_mean).sum(1))
    return CamResult(cam.float(), tgt.detach(), logits.detach(), layer, weights, steps)
