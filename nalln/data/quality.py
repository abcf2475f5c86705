"""Image-quality screening: flag smears that should go to a person, not to the model.

The paper found accuracy collapsing on darkened images (-25% brightness: 36%), so inputs that are
under-illuminated, over-exposed or out of focus are flagged "needs manual review". Two kinds of
threshold: absolute defaults (for any data set), and, when a model is at hand, limits relative to
the images it was trained on (the training split's luminance and sharpness, stored in the
checkpoint).

Measures, on the grayscale image resized to ``size`` x ``size``: mean luminance in [0, 1],
fraction of saturated pixels (>= 250 of 255), and sharpness = variance of the Laplacian
(0-255 scale).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

FLAGS = ("under-illuminated", "over-exposed", "blurred")
STATS_SIZE = 224


@dataclass(frozen=True)
class QualityThresholds:
    """Absolute limits; measured on synthetic smears: normal luminance 0.70-0.84, -50% brightness
    0.35-0.42; normal sharpness >= 21, Gaussian blur sigma 1 about 10, sigma 2 about 3."""

    dark: float = 0.35
    bright: float = 0.93
    saturated_fraction: float = 0.2
    blur: float = 5.0
    # relative limits, used when training statistics are available
    sigma: float = 3.0
    blur_fraction: float = 0.5


@dataclass(frozen=True)
class ImageStats:
    luminance: float
    saturated: float
    sharpness: float


def gray_array(img: Image.Image | torch.Tensor, size: int = STATS_SIZE) -> np.ndarray:
    if isinstance(img, torch.Tensor):  # uint8 [3, H, W]
        img = Image.fromarray(img.permute(1, 2, 0).cpu().numpy())
    g = img.convert("L")
    if g.size != (size, size):
        g = g.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(g, dtype=np.float64)


def image_stats(img: Image.Image | torch.Tensor, size: int = STATS_SIZE) -> ImageStats:
    g = gray_array(img, size)
    return ImageStats(
        luminance=float(g.mean() / 255.0),
        saturated=float((g >= 250).mean()),
        sharpness=float(ndimage.laplace(g).var()),
    )


def reference_stats(images: torch.Tensor, size: int = STATS_SIZE) -> dict[str, float]:
    """Training-set reference for relative limits, from uint8 ``[N, 3, H, W]`` images."""
    stats = [image_stats(im, size) for im in images]
    lum = np.array([s.luminance for s in stats])
    sharp = np.array([s.sharpness for s in stats])
    return {
        "size": size,
        "n": len(stats),
        "luminance_mean": float(lum.mean()),
        "luminance_std": float(lum.std()),
        "sharpness_p01": float(np.percentile(sharp, 1)),
        "sharpness_median": float(np.median(sharp)),
    }


def flags_from_stats(
    s: ImageStats, reference: dict | None = None, t: QualityThresholds = QualityThresholds()
) -> list[str]:
    dark, bright, blur = t.dark, t.bright, t.blur
    if reference:
        spread = t.sigma * max(reference["luminance_std"], 0.01)
        dark = max(dark, reference["luminance_mean"] - spread)
        bright = min(bright, reference["luminance_mean"] + spread)
        blur = max(blur, t.blur_fraction * reference["sharpness_p01"])
    out = []
    if s.luminance < dark:
        out.append("under-illuminated")
    if s.luminance > bright or s.saturated > t.saturated_fraction:
        out.append("over-exposed")
    if s.sharpness < blur:
        out.append("blurred")
    return out


def quality_flags(
    img: Image.Image | torch.Tensor,
    reference: dict | None = None,
    thresholds: QualityThresholds = QualityThresholds(),
) -> list[str]:
    """The quality problems of one image (empty list: fine)."""
    size = int(reference["size"]) if reference else STATS_SIZE
    return flags_from_stats(image_stats(img, size), reference, thresholds)


def thresholds_dict(t: QualityThresholds = QualityThresholds()) -> dict:
    return asdict(t)
