"""Stateless building blocks of NeurALLNet; every one runs all time steps as one batch."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from nalln.models.neuron import LIF, LIFParameters


def fold_time(x: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Repeat a static ``[B, ...]`` tensor into a time-folded ``[T*B, ...]`` batch."""
    return x.unsqueeze(0).expand(num_steps, *x.shape).reshape(num_steps * x.shape[0], *x.shape[1:])


def unfold_time(x: torch.Tensor, num_steps: int) -> torch.Tensor:
    """``[T*B, ...] -> [T, B, ...]``."""
    return x.reshape(num_steps, -1, *x.shape[1:])


class ConvBN(nn.Sequential):
    """Convolution followed by BatchNorm (or a conv with bias when BatchNorm is ablated)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        batchnorm: bool = True,
    ) -> None:
        conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=not batchnorm,
        )
        layers: list[tuple[str, nn.Module]] = [("conv", conv)]
        if batchnorm:
            layers.append(("bn", nn.BatchNorm2d(out_channels)))
        super().__init__(OrderedDict(layers))


class SqueezeExcite(nn.Module):
    """Channel attention: GAP -> FC -> ReLU -> FC -> sigmoid gate, multiplied onto the input.

    Applied per time step (the time-folded batch keeps steps apart). ``current_scale`` is set
    only on models fine-tuned for Loihi fixed point with hybrid SE (from the checkpoint's grid,
    not its weights): the gated current is then rounded to ``k / current_scale`` as the SE
    side-car sends it to the chip, so the float model spikes as the chip does.
    """

    def __init__(self, channels: int, ratio: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // ratio)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.current_scale: float | None = None

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The per-sample, per-channel gate in (0, 1), shape ``[N, C]``."""
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return round_current(x * self.gate(x)[:, :, None, None], self.current_scale)


def round_current(y: torch.Tensor, scale: float | None) -> torch.Tensor:
    """``round(y * scale) / scale`` forward, identity backward (straight-through); ``None``:
    ``y`` unchanged."""
    if scale is None:
        return y
    return y + (torch.round(y * scale) / scale - y).detach()


class SpikingDSBlock(nn.Module):
    """Depthwise-separable spiking block: dw3x3 -> BN -> LIF -> pw1x1 -> BN -> [SE] -> LIF.

    ``se_position="current"`` gates the pointwise current before the neuron, so every synaptic
    layer downstream still receives binary spikes; ``"spikes"`` gates the spikes after it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        num_steps: int,
        lif: LIFParameters,
        se_ratio: int | None,
        se_position: str = "current",
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        self.dw = ConvBN(
            in_channels, in_channels, 3, stride, groups=in_channels, batchnorm=batchnorm
        )
        self.dw_lif = LIF(num_steps, lif)
        self.pw = ConvBN(in_channels, out_channels, 1, 1, batchnorm=batchnorm)
        self.se = SqueezeExcite(out_channels, se_ratio) if se_ratio else None
        self.se_position = se_position
        self.pw_lif = LIF(num_steps, lif)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw_lif(self.dw(x))
        x = self.pw(x)
        if self.se is not None and self.se_position == "current":
            x = self.se(x)
        x = self.pw_lif(x)
        if self.se is not None and self.se_position == "spikes":
            x = self.se(x)
        return x


class SpikingHead(nn.Module):
    """GAP -> FC -> [BN] -> LIF -> FC (or GAP -> FC when ``hidden == 0``); logits averaged over T.

    The pooled spike rates entering the head are small (a few percent), so without a BatchNorm
    on the hidden current its LIF layer starts silent and the head receives no gradient; the
    BatchNorm (``batchnorm=True``) folds into ``fc1`` for deployment.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        num_classes: int,
        num_steps: int,
        lif: LIFParameters,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.bn: nn.Module | None = None
        if hidden > 0:
            self.fc1: nn.Module | None = nn.Linear(in_features, hidden, bias=not batchnorm)
            if batchnorm:
                self.bn = nn.BatchNorm1d(hidden)
            self.lif: nn.Module | None = LIF(num_steps, lif)
            self.fc2 = nn.Linear(hidden, num_classes)
        else:
            self.fc1 = self.lif = None
            self.fc2 = nn.Linear(in_features, num_classes)

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step logits ``[T, B, classes]`` from time-folded feature maps."""
        x = x.mean(dim=(2, 3))
        if self.fc1 is not None:
            x = self.fc1(x)
            if self.bn is not None:
                x = self.bn(x)
            x = self.lif(x)
        return unfold_time(self.fc2(x), self.num_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_steps(x).mean(0)


def se_blocks(model: nn.Module) -> dict[str, SpikingDSBlock]:
    """Every block that has an SE module, by module name, in forward order."""
    return {
        n: m for n, m in model.named_modules() if isinstance(m, SpikingDSBlock) and m.se is not None
    }
