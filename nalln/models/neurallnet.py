"""NeurALLNet: direct-coded, depthwise-separable convolutional SNN with SE attention.

The paper fixes the totals (336,544 parameters, a 384 -> 256 refinement pointwise conv, T = 4)
but not every width; the defaults below are the reconstruction documented in
docs/architecture.md (337,076 parameters, +0.16%). Every open choice is a config field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nalln.errors import NallnError
from nalln.models.blocks import ConvBN, SpikingDSBlock, SpikingHead, fold_time
from nalln.models.neuron import LIF, LIFParameters

SE_POSITIONS = ("current", "spikes")


def _scaled(width: int, multiplier: float, divisor: int = 8) -> int:
    """Scale a width and round to a multiple of ``divisor`` (never below it), as MobileNet does."""
    if multiplier == 1.0:
        return width
    return max(divisor, int(round(width * multiplier / divisor)) * divisor)


MAX_STEPS = 1024
MAX_IMAGE_SIZE = 4096
MAX_WIDTH_MULTIPLIER = 64.0
MAX_PIXEL_STEPS = 4096 * 4096 * 4
"""Upper bounds far above any use (the paper: T = 4, 224 px, multiplier 1): a checkpoint's
metadata may come from a stranger, and these sizes decide the memory inference takes
(``image_size**2 * num_steps`` at most MAX_PIXEL_STEPS: about 2 GB of stem activations)."""


@dataclass(frozen=True)
class NeurALLNetConfig:
    """Architecture of NeurALLNet. ``widths`` are the four stage outputs before the multiplier."""

    num_classes: int = 4
    in_channels: int = 3
    image_size: int = 224
    num_steps: int = 4
    stem_channels: int = 32
    stem_kernel: int = 3
    stem_stride: int = 2
    widths: tuple[int, ...] = (32, 96, 192, 384)
    width_multiplier: float = 1.0
    use_se: bool = True
    se_ratio: int = 4
    se_position: str = "current"
    use_refinement: bool = True
    refine_channels: int = 256
    head_hidden: int = 128
    batchnorm: bool = True
    tau: float = 2.0
    v_threshold: float = 1.0
    surrogate_alpha: float = 2.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        checks = [
            (self.num_classes >= 2, "num_classes must be at least 2"),
            (self.in_channels >= 1, "in_channels must be positive"),
            (1 <= self.num_steps <= MAX_STEPS, f"num_steps (T) must be 1..{MAX_STEPS}"),
            (self.image_size <= MAX_IMAGE_SIZE, f"image_size must be at most {MAX_IMAGE_SIZE}"),
            (
                self.image_size**2 * self.num_steps <= MAX_PIXEL_STEPS,
                f"image_size**2 * num_steps must be at most {MAX_PIXEL_STEPS} (memory)",
            ),
            (
                self.width_multiplier <= MAX_WIDTH_MULTIPLIER,
                f"width_multiplier must be at most {MAX_WIDTH_MULTIPLIER}",
            ),
            (len(self.widths) >= 1 and min(self.widths) > 0, "widths must be positive"),
            (self.width_multiplier > 0, "width_multiplier must be positive"),
            (self.se_ratio >= 1, "se_ratio must be at least 1"),
            (self.se_position in SE_POSITIONS, f"se_position must be one of {SE_POSITIONS}"),
            (self.head_hidden >= 0, "head_hidden must be >= 0 (0 = no hidden layer)"),
            (self.tau > 1.0, "tau must be > 1 (decay 1 - 1/tau must lie in (0, 1))"),
            (self.v_threshold > 0, "v_threshold must be positive"),
            (self.stem_kernel % 2 == 1, "stem_kernel must be odd"),
        ]
        for ok, msg in checks:
            if not ok:
                raise NallnError(f"invalid model config: {msg}")
        min_size = self.stem_stride * 2 ** len(self.widths)
        if self.image_size < min_size:
            raise NallnError(
                f"invalid model config: image_size {self.image_size} is smaller than the total "
                f"stride {min_size}; use image_size >= {min_size}"
            )

    @property
    def lif(self) -> LIFParameters:
        return LIFParameters(self.tau, self.v_threshold, self.surrogate_alpha)

    @property
    def stage_widths(self) -> tuple[int, ...]:
        return tuple(_scaled(w, self.width_multiplier) for w in self.widths)

    @property
    def feature_size(self) -> int:
        """Spatial size of the last feature map (each stage halves it; padding rounds up)."""
        size = -(-self.image_size // self.stem_stride)
        for _ in self.widths:
            size = -(-size // 2)
        return size

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NeurALLNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise NallnError(
                f"unknown model config key(s): {', '.join(unknown)}; known keys: "
                f"{', '.join(sorted(known))}"
            )
        return cls(**d)


class NeurALLNet(nn.Module):
    """Input ``[B, C, H, W]`` (normalised image) -> logits ``[B, classes]`` averaged over T.

    Direct coding feeds the same image at every step, so the stem convolution and its BatchNorm
    are computed once and repeated (exact: identical copies give identical batch statistics).
    """

    def __init__(self, config: NeurALLNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or NeurALLNetConfig()
        T, lif = cfg.num_steps, cfg.lif
        stem_out = _scaled(cfg.stem_channels, cfg.width_multiplier)
        self.stem = ConvBN(
            cfg.in_channels, stem_out, cfg.stem_kernel, cfg.stem_stride, batchnorm=cfg.batchnorm
        )
        self.stem_lif = LIF(T, lif)
        stages = []
        c_in = stem_out
        for c_out in cfg.stage_widths:
            stages.append(
                SpikingDSBlock(
                    c_in,
                    c_out,
                    stride=2,
                    num_steps=T,
                    lif=lif,
                    se_ratio=cfg.se_ratio if cfg.use_se else None,
                    se_position=cfg.se_position,
                    batchnorm=cfg.batchnorm,
                )
            )
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        if cfg.use_refinement:
            refine_out = _scaled(cfg.refine_channels, cfg.width_multiplier)
            self.refine: nn.Module | None = SpikingDSBlock(
                c_in,
                refine_out,
                stride=1,
                num_steps=T,
                lif=lif,
                se_ratio=None,
                batchnorm=cfg.batchnorm,
            )
            c_in = refine_out
        else:
            self.refine = None
        self.head = SpikingHead(c_in, cfg.head_hidden, cfg.num_classes, T, lif, cfg.batchnorm)

    @property
    def num_steps(self) -> int:
        return self.config.num_steps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Time-folded spike maps ``[T*B, C, h, w]`` entering the head."""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels or min(x.shape[2:]) < 1:
            raise NallnError(
                f"model input must be [batch, {self.config.in_channels}, H, W]; got "
                f"{list(x.shape)}"
            )
        if x.dtype != self.stem.conv.weight.dtype:
            raise NallnError(
                f"model input must be {self.stem.conv.weight.dtype} like the weights, got "
                f"{x.dtype}; feed images through the preprocessing (LoadedModel.preprocess)"
            )
        x = self.stem_lif(fold_time(self.stem(x), self.num_steps))
        x = self.stages(x)
        if self.refine is not None:
            x = self.refine(x)
        return x

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step logits ``[T, B, classes]``."""
        return self.head.forward_steps(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_steps(x).mean(0)

    def named_blocks(self) -> list[tuple[str, SpikingDSBlock]]:
        """The depthwise-separable blocks in forward order by module path (``stages.0``, ...,
        ``refine``): the one list the exporter, the fake-quantised network and the fast path
        name their layers from (:mod:`nalln.models.naming`)."""
        blocks = [(f"stages.{i}", b) for i, b in enumerate(self.stages)]
        if self.refine is not None:
            blocks.append(("refine", self.refine))
        return blocks

    def spiking_layers(self) -> dict[str, LIF]:
        """Every LIF population by module name, in forward order."""
        return {n: m for n, m in self.named_modules() if isinstance(m, LIF)}
