r"""Image perturbations for the robustness sweep, in [0, 1] image space, deterministic by seed.

Each perturbation is one small frozen dataclass: its name, the severity it is parameterised by,
the valid range of that severity, the default grid and the function that applies it. They act on
float images ``[N, 3, H, W]`` in [0, 1] at the model's input size, *before* the model's fixed
preprocessing (CLAHE, normalisation), as a degraded photograph would arrive. Kornia does the work
where it has the operation:

=============  ===========================  =============================================
name           severity                     operation
=============  ===========================  =============================================
noise          variance :math:`\sigma^2`    :math:`x + \mathcal{N}(0, \sigma^2)`, clipped
                                            (``kornia.augmentation.RandomGaussianNoise``)
salt_pepper    amount :math:`a`             a fraction :math:`a` of pixels (all channels)
                                            set to 0 or 1, half each
                                            (``kornia.augmentation.RandomSaltAndPepperNoise``)
blur           sigma (pixels)               Gaussian blur, kernel :math:`2\lceil 3\sigma\rceil+1`
                                            (``kornia.filters.gaussian_blur2d``)
occlusion      area fraction :math:`f`      one black square of area :math:`f\,HW` at a random
                                            place (``kornia.augmentation.RandomErasing``)
rotation       degrees                      in-plane rotation about the centre, counter-
                                            clockwise positive (``kornia.geometry.rotate``)
brightness     relative change :math:`d`    :math:`\mathrm{clip}(x\,(1+d))` (multiplicative,
                                            as PIL/torchvision; additive via
                                            ``kornia.enhance.adjust_brightness``)
=============  ===========================  =============================================

Randomness comes from ``torch.random.fork_rng`` seeded per (seed, perturbation, chunk of
:data:`CHUNK` images): the same seed gives the same images whatever the inference batch size, and
every severity of one perturbation reuses the same random draws (common random numbers), so a
curve moves only because the severity does.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import kornia.augmentation as K
import kornia.enhance
import kornia.filters
import kornia.geometry.transform as KT
import torch

from nalln.errors import NallnError

CHUNK = 64  # images per seeded chunk; fixed so results do not depend on the batch size
BRIGHTNESS_MODES = ("multiplicative", "additive")
PADDINGS = ("zeros", "border", "reflection")


def gaussian_noise(x: torch.Tensor, variance: float) -> torch.Tensor:
    """Additive zero-mean Gaussian noise of the given variance, clipped to [0, 1]."""
    if variance == 0:
        return x
    noise = K.RandomGaussianNoise(mean=0.0, std=math.sqrt(variance), p=1.0)
    return noise(x).clamp(0.0, 1.0)


def salt_and_pepper(x: torch.Tensor, amount: float) -> torch.Tensor:
    """A fraction ``amount`` of pixel positions set to white or black (half each)."""
    if amount == 0:
        return x
    return K.RandomSaltAndPepperNoise(amount=float(amount), salt_vs_pepper=0.5, p=1.0)(x)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur with standard deviation ``sigma`` pixels (reflecting borders)."""
    if sigma == 0:
        return x
    k = 2 * math.ceil(3 * sigma) + 1
    border = "reflect" if k // 2 < min(x.shape[-2:]) else "replicate"
    return kornia.filters.gaussian_blur2d(x, (k, k), (float(sigma), float(sigma)), border)


def occlusion(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """One black square covering ``fraction`` of the image area, placed uniformly at random."""
    if fraction == 0:
        return x
    erase = K.RandomErasing(scale=(fraction, fraction), ratio=(1.0, 1.0), value=0.0, p=1.0)
    return erase(x)


def rotation(x: torch.Tensor, degrees: float, padding: str = "zeros") -> torch.Tensor:
    """Rotate about the centre (positive = counter-clockwise); uncovered corners per ``padding``."""
    if degrees == 0:
        return x
    angle = torch.full((x.shape[0],), float(degrees), dtype=x.dtype, device=x.device)
    return KT.rotate(x, angle, padding_mode=padding).clamp(0.0, 1.0)


def brightness(x: torch.Tensor, delta: float, mode: str = "multiplicative") -> torch.Tensor:
    """Brighter (``delta > 0``) or darker (``delta < 0``): ``x * (1 + delta)`` or ``x + delta``."""
    if delta == 0:
        return x
    if mode == "additive":
        return kornia.enhance.adjust_brightness(x, float(delta), clip_output=True)
    return (x * (1.0 + delta)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class Perturbation:
    """One kind of degradation and how severe it may be."""

    name: str
    parameter: str  # what the severity measures
    unit: str
    low: float  # valid range of the severity (inclusive)
    high: float
    identity: float  # severity that leaves the image unchanged
    defaults: tuple[float, ...]
    description: str
    random: bool  # draws random numbers (seeded)
    axis: str = ""  # short axis label for plots

    def __post_init__(self) -> None:
        if not self.low <= self.identity <= self.high:
            raise ValueError(f"{self.name}: identity severity outside its range")
        self.check(self.defaults)

    def check(self, severities: Sequence[float]) -> tuple[float, ...]:
        """Validate a grid; raises :class:`NallnError` naming the bad value and the range."""
        out = []
        for s in severities:
            s = float(s)
            if not math.isfinite(s) or not self.low <= s <= self.high:
                raise NallnError(
                    f"{self.name} {self.parameter} {s:g} is out of range; use values in "
                    f"[{self.low:g}, {self.high:g}] ({self.unit})"
                )
            out.append(s)
        if not out:
            raise NallnError(f"the {self.name} grid is empty; give at least one severity")
        return tuple(sorted(set(out)))


PERTURBATIONS: dict[str, Perturbation] = {
    p.name: p
    for p in (
        Perturbation(
            "noise",
            "variance",
            "variance of additive Gaussian noise in [0,1] image units",
            0.0,
            1.0,
            0.0,
            (0.0, 0.005, 0.01, 0.02, 0.05, 0.1),
            "additive Gaussian noise",
            True,
            "noise variance",
        ),
        Perturbation(
            "salt_pepper",
            "amount",
            "fraction of pixels replaced",
            0.0,
            1.0,
            0.0,
            (0.0, 0.01, 0.02, 0.05, 0.1),
            "salt-and-pepper noise",
            True,
            "fraction of pixels replaced",
        ),
        Perturbation(
            "blur",
            "sigma",
            "pixels at the model's input size",
            0.0,
            10.0,
            0.0,
            (0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
            "Gaussian blur",
            False,
            "sigma (pixels)",
        ),
        Perturbation(
            "occlusion",
            "area fraction",
            "fraction of the image area covered by one black square",
            0.0,
            0.9,
            0.0,
            (0.0, 0.05, 0.1, 0.15, 0.25, 0.4),
            "random occlusion",
            True,
            "occluded area fraction",
        ),
        Perturbation(
            "rotation",
            "angle",
            "degrees, counter-clockwise",
            -180.0,
            180.0,
            0.0,
            (-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0),
            "in-plane rotation",
            False,
            "angle (degrees, counter-clockwise)",
        ),
        Perturbation(
            "brightness",
            "relative change",
            "fraction of the original brightness (-0.25 = 25% darker)",
            -1.0,
            3.0,
            0.0,
            (-0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5),
            "illumination change",
            False,
            "relative brightness change",
        ),
    )
}


def get_perturbation(name: str) -> Perturbation:
    try:
        return PERTURBATIONS[name]
    except KeyError:
        raise NallnError(
            f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}"
        ) from None


def _seed(seed: int, name: str, chunk: int) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode()) * 7_919 + chunk) % (2**63 - 1)


@dataclass(frozen=True)
class PerturbOptions:
    """Settings that are not severities: how brightness changes, how rotation fills corners."""

    brightness_mode: str = "multiplicative"
    rotation_padding: str = "zeros"

    def __post_init__(self) -> None:
        if self.brightness_mode not in BRIGHTNESS_MODES:
            raise NallnError(f"brightness mode must be one of {', '.join(BRIGHTNESS_MODES)}")
        if self.rotation_padding not in PADDINGS:
            raise NallnError(f"rotation padding must be one of {', '.join(PADDINGS)}")


def _function(name: str, options: PerturbOptions) -> Callable[[torch.Tensor, float], torch.Tensor]:
    if name == "noise":
        return gaussian_noise
    if name == "salt_pepper":
        return salt_and_pepper
    if name == "blur":
        return gaussian_blur
    if name == "occlusion":
        return occlusion
    if name == "rotation":
        return lambda x, s: rotation(x, s, options.rotation_padding)
    if name == "brightness":
        return lambda x, s: brightness(x, s, options.brightness_mode)
    raise NallnError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")


def apply(
    name: str,
    images: torch.Tensor,
    severity: float,
    seed: int = 0,
    options: PerturbOptions = PerturbOptions(),
    start: int = 0,
) -> torch.Tensor:
    """Perturb float images ``[N, 3, H, W]`` in [0, 1]; returns a new tensor in [0, 1].

    ``start`` is the index of ``images[0]`` in the whole set; it must be a multiple of
    :data:`CHUNK` so that every image gets the random draws of its fixed chunk.
    """
    pert = get_perturbation(name)
    severity = pert.check([severity])[0]
    if images.dim() != 4 or images.shape[1] != 3:
        raise NallnError(f"perturbations take [N, 3, H, W] images; got {list(images.shape)}")
    if start % CHUNK:
        raise ValueError(f"start must be a multiple of {CHUNK}")
    fn = _function(name, options)
    x = images.float()
    if severity == pert.identity:
        return x.clone()
    outs = []
    for i in range(0, len(x), CHUNK):
        part = x[i : i + CHUNK]
        if pert.random:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_seed(seed, name, (start + i) // CHUNK))
                outs.append(fn(part, severity))
        else:
            outs.append(fn(part, severity))
    return torch.cat(outs) if outs else x.clone()
