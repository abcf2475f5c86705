"""Image-quality screening: flag smears that should go to a person, not to the model.

The paper found accuracy collapsing on darkened images (-25% brightness: 36%), so inputs that are
under-illuminated, over-exposed or out of focus are flagged "needs manual review". Two kinds of
threshold: absolute defaults (for any data set), and, when a model is at hand, limits relative to
the images it was trained on (the training split's luminance and sharpness, stored in the
checkpoint).

Measures, on the grayscale image: mean luminance in [0, 1], fraction of saturated pixels
(>= 250 of 255), and sharpness = variance of the Laplacian (0-255 scale) of the image rescaled to
a mean luminance of 0.75. The rescaling makes sharpness independent of brightness (a darkened
image has a proportionally weaker Laplacian; without it, every -50% image was also "blurred").

Relative limits compare the image at the model's input size with the training images at that
size. Absolute limits are calibrated at 224 x 224 pixels: larger images are downsampled to it,
smaller ones are measured as they are (upsampling would blur them) and then cannot be judged for
blur, because the Laplacian's variance depends on the resolution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

FLAGS = ("under-illuminated", "over-exposed", "blurred", "too-small")
MIN_SIDE = 16  # below this, any model input is an upsampled blur of a few pixels
STATS_SIZE = 224
SHARPNESS_LUMINANCE = 0.75  # sharpness is measured on the image rescaled to this mean


@dataclass(frozen=True)
class QualityThresholds:
    """Absolute limits. Measured on 400 synthetic 224-px smears (``nalln data synth``): normal
    luminance 0.675-0.881, so -50% brightness gives <= 0.441 (flagged by ``dark = 0.45``, which
    leaves a 0.22 margin below the darkest normal image); normal sharpness >= 11, Gaussian blur
    sigma 1 about 10, sigma 2 about 3 (flagged by ``blur = 5``). Milder darkening (-25%) is caught
    by the relative limits a model's training statistics give (mean - 3 std)."""

    dark: float = 0.45
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
    sharpness: float  # Laplacian variance at mean luminance SHARPNESS_LUMINANCE
    side: int = STATS_SIZE  # shorter side, in pixels, the statistics were measured at


def gray_array(img: Image.Image | torch.Tensor, size: int | None = STATS_SIZE) -> np.ndarray:
    """Grayscale 0-255 array at ``size`` x ``size``; ``size=None``: downsampled to at most
    :data:`STATS_SIZE` (aspect kept), never upsampled."""
    if isinstance(img, torch.Tensor):  # uint8 [3, H, W]
        img = Image.fromarray(img.permute(1, 2, 0).cpu().numpy())
    g = img.convert("L")
    if size is None:
        scale = STATS_SIZE / min(g.size)
        if scale < 1:
            g = g.resize(
                (max(1, round(g.size[0] * scale)), max(1, round(g.size[1] * scale))),
                Image.Resampling.BILINEAR,
            )
    elif g.size != (size, size):
        g = g.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(g, dtype=np.float64)


def sharpness(g: np.ndarray) -> float:
    """Variance of the Laplacian of a 0-255 grayscale image rescaled to mean luminance 0.75."""
    mean = max(float(g.mean()), 0.02 * 255.0)
    return float(ndimage.laplace(g * (SHARPNESS_LUMINANCE * 255.0 / mean)).var())


def image_stats(img: Image.Image | torch.Tensor, size: int | None = STATS_SIZE) -> ImageStats:
    g = gray_array(img, size)
    return ImageStats(
        luminance=float(g.mean() / 255.0),
        saturated=float((g >= 250).mean()),
        sharpness=sharpness(g),
        side=int(min(g.shape)),
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
        "sharpness_luminance": SHARPNESS_LUMINANCE,
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
    judge_blur = bool(reference) or s.side >= STATS_SIZE
    if judge_blur and s.sharpness < blur:
        out.append("blurred")
    if s.side < MIN_SIDE:  # measured at its own size (data check): too few pixels to judge
        out.append("too-small")
    return out


def quality_flags(
    img: Image.Image | torch.Tensor,
    reference: dict | None = None,
    thresholds: QualityThresholds = QualityThresholds(),
) -> list[str]:
    """The quality problems of one image (empty list: fine).

    With ``reference`` (a model's training statistics) the image is measured at the model's
    input size; without, at its own size capped at :data:`STATS_SIZE`.
    """
    size = int(reference["size"]) if reference else None
    return flags_from_stats(image_stats(img, size), reference, thresholds)


def thresholds_dict(t: QualityThresholds = QualityThresholds()) -> dict:
    return asdict(t)
