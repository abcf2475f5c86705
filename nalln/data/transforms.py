"""Augmentation (training only) and the fixed preprocessing shared by training and inference.

Augmentation is kornia's batched GPU/CPU pipeline; the fixed part (optional CLAHE on the
luminance channel, then per-channel normalisation) is a small module stored with the checkpoint
so that every command sees images exactly as the model was trained on them.
"""

from __future__ import annotations

import kornia.augmentation as K
import kornia.color
import kornia.enhance
import torch
from torch import nn

from nalln.config import AugmentConfig, PreprocessConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` -> float in [0, 1]."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def clahe_luminance(x: torch.Tensor, clip: float = 2.0, grid: int = 8) -> torch.Tensor:
    """CLAHE on the L channel of CIE-Lab, so stain colours are kept; ``x`` in [0, 1]."""
    lab = kornia.color.rgb_to_lab(x.clamp(0, 1))
    lum = (lab[:, :1] / 100.0).clamp(0, 1)
    lum = kornia.enhance.equalize_clahe(lum, clip_limit=float(clip), grid_size=(grid, grid))
    lab = torch.cat([lum * 100.0, lab[:, 1:]], dim=1)
    return kornia.color.lab_to_rgb(lab).clamp(0, 1)


class Preprocess(nn.Module):
    """[0, 1] images -> network input: optional CLAHE, then ``(x - mean) / std``.

    ``input_scale`` (set only for models fine-tuned for Loihi fixed point) then rounds the input
    to ``round(x * input_scale) / input_scale``, the integer grid the chip receives the image
    on, so that the torch model sees exactly what the fixed-point network sees.
    """

    def __init__(
        self,
        mean: tuple[float, ...] = (0.0, 0.0, 0.0),
        std: tuple[float, ...] = (1.0, 1.0, 1.0),
        config: PreprocessConfig = PreprocessConfig(),
        input_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.input_scale = float(input_scale) if input_scale else None
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def photometric(self, x: torch.Tensor) -> torch.Tensor:
        """The image-dependent part (CLAHE) without normalisation."""
        if self.config.clahe:
            x = clahe_luminance(x, self.config.clahe_clip, self.config.clahe_grid)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (self.photometric(to_float(x)) - self.mean) / self.std
        if self.input_scale is not None:
            x = torch.round(x * self.input_scale) / self.input_scale
        return x

    def to_meta(self) -> dict:
        extra = {"input_scale": self.input_scale} if self.input_scale is not None else {}
        return {
            **extra,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "preprocess": {
                "clahe": self.config.clahe,
                "clahe_clip": self.config.clahe_clip,
                "clahe_grid": self.config.clahe_grid,
                "normalisation": self.config.normalisation,
            },
        }

    @classmethod
    def from_meta(cls, meta: dict) -> Preprocess:
        return cls(
            tuple(meta["mean"]),
            tuple(meta["std"]),
            PreprocessConfig(**meta["preprocess"]),
            meta.get("input_scale"),
        )


def fit_preprocess(images: torch.Tensor, config: PreprocessConfig, chunk: int = 256) -> Preprocess:
    """Normalisation statistics from training images (uint8), after CLAHE if enabled."""
    if config.normalisation == "imagenet":
        return Preprocess(IMAGENET_MEAN, IMAGENET_STD, config)
    if config.normalisation == "none":
        return Preprocess(config=config)
    probe = Preprocess(config=config)
    total = torch.zeros(3, dtype=torch.float64)
    sq = torch.zeros(3, dtype=torch.float64)
    n = 0
    for i in range(0, len(images), chunk):
        x = probe.photometric(to_float(images[i : i + chunk])).double()
        total += x.sum(dim=(0, 2, 3))
        sq += (x * x).sum(dim=(0, 2, 3))
        n += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = (sq / n - mean * mean).clamp_min(1e-12).sqrt()
    return Preprocess(tuple(mean.tolist()), tuple(std.clamp_min(1e-3).tolist()), config)


def build_augmentation(cfg: AugmentConfig, size: int) -> nn.Module:
    """The paper's spatial augmentation (+ optional photometric jitter), applied per sample."""
    pad = cfg.padding.upper()
    ops: list[nn.Module] = [
        K.RandomAffine(degrees=cfg.rotation_deg, padding_mode=pad, p=1.0),
        K.RandomAffine(
            degrees=0.0,
            translate=(cfg.translate, cfg.translate),
            shear=cfg.shear_deg,
            padding_mode=pad,
            p=1.0,
        ),
        K.RandomResizedCrop((size, size), scale=(cfg.crop_scale_min, 1.0), p=1.0),
        K.RandomHorizontalFlip(p=cfg.hflip),
    ]
    if cfg.photometric:
        ops.append(K.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, p=0.8))
    return K.AugmentationSequential(*ops)
