"""The perturbations produce the statistics they are named after, deterministically."""

from __future__ import annotations

import math

import pytest
import torch

from nalln.analysis.perturbations import CHUNK, PERTURBATIONS, PerturbOptions, apply
from nalln.errors import NallnError


def gray(n: int = 40, size: int = 48, value: float = 0.5) -> torch.Tensor:
    return torch.full((n, 3, size, size), value)


@pytest.mark.parametrize("variance", [0.001, 0.01, 0.02])
def test_noise_has_the_requested_variance(variance):
    x = gray()
    y = apply("noise", x, variance, seed=1)
    measured = (y - x).var().item()
    assert measured == pytest.approx(variance, rel=0.05)  # clipping at 0/1 is negligible here
    assert abs((y - x).mean().item()) < 0.005


def test_noise_is_clipped_to_unit_range():
    y = apply("noise", gray(value=0.95), 0.1, seed=0)
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("amount", [0.02, 0.1, 0.3])
def test_salt_and_pepper_replaces_the_requested_fraction(amount):
    x = gray()
    y = apply("salt_pepper", x, amount, seed=2)
    replaced = (y != 0.5).any(dim=1)
    assert replaced.float().mean().item() == pytest.approx(amount, abs=0.01)
    # a replaced pixel is white or black in all channels, half of them each
    assert torch.all((y == 0) | (y == 1) | (y == 0.5))
    salt = (y == 1).all(dim=1).float().mean().item()
    assert salt == pytest.approx(amount / 2, abs=0.01)


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.4])
def test_occlusion_covers_the_requested_area_with_one_black_square(fraction):
    size = 64
    x = gray(n=10, size=size)
    y = apply("occlusion", x, fraction, seed=3)
    black = (y == 0).all(dim=1)  # [N, H, W]
    side = math.sqrt(fraction) * size
    tol = (2 * side + 1) / size**2  # the side is rounded to whole pixels
    for mask in black:
        assert mask.float().mean().item() == pytest.approx(fraction, abs=tol)
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert h * w == mask.sum()  # one filled rectangle
        assert abs(int(h) - int(w)) <= 1  # square


def test_blur_sigma_matches_the_impulse_response():
    x = torch.zeros(1, 3, 41, 41)
    x[..., 20, 20] = 1.0
    y = apply("blur", x, 2.0)[0, 0]
    assert y.sum().item() == pytest.approx(1.0, abs=1e-3)
    coords = torch.arange(41.0) - 20
    var_x = (y.sum(0) * coords**2).sum().item()
    assert math.sqrt(var_x) == pytest.approx(2.0, rel=0.05)


def test_blur_keeps_a_constant_image():
    assert torch.allclose(apply("blur", gray(n=2), 3.0), gray(n=2), atol=1e-6)


def test_rotation_is_counter_clockwise():
    x = torch.zeros(1, 3, 33, 33)
    x[..., 16, 26:30] = 1.0  # a bar right of the centre
    y = apply("rotation", x, 90.0)
    # counter-clockwise by 90 degrees: the bar moves above the centre
    assert y[0, 0, 3:10, 16].max() > 0.9
    assert y[0, 0, 16, 26:30].max() < 0.1


@pytest.mark.parametrize("delta", [-0.5, -0.25, 0.25])
def test_brightness_scales_the_image(delta):
    y = apply("brightness", gray(value=0.4), delta)
    assert y.mean().item() == pytest.approx(0.4 * (1 + delta), abs=1e-6)


def test_additive_brightness_uses_an_offset():
    opts = PerturbOptions(brightness_mode="additive")
    y = apply("brightness", gray(value=0.4), -0.25, options=opts)
    assert y.mean().item() == pytest.approx(0.15, abs=1e-6)


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_identity_severity_changes_nothing(name):
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(apply(name, x, PERTURBATIONS[name].identity), x)


@pytest.mark.parametrize("name", ["noise", "salt_pepper", "occlusion"])
def test_random_perturbations_are_deterministic_and_batch_independent(name):
    x = torch.rand(CHUNK + 10, 3, 24, 24)
    sev = {"noise": 0.02, "salt_pepper": 0.05, "occlusion": 0.1}[name]
    a = apply(name, x, sev, seed=5)
    assert torch.equal(a, apply(name, x, sev, seed=5))
    assert not torch.equal(a, apply(name, x, sev, seed=6))
    second_chunk = apply(name, x[CHUNK:], sev, seed=5, start=CHUNK)
    assert torch.equal(a[CHUNK:], second_chunk)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("noise", -0.1),
        ("noise", 1.5),
        ("salt_pepper", 2),
        ("blur", -1),
        ("occlusion", 0.95),
        ("rotation", 400),
        ("brightness", -1.5),
        ("noise", float("nan")),
    ],
)
def test_out_of_range_severity_is_a_clear_error(name, value):
    with pytest.raises(NallnError, match=r"out of range; use values in \["):
        apply(name, gray(n=1), value)


def test_unknown_perturbation_lists_the_known_ones():
    with pytest.raises(NallnError, match="known: noise, salt_pepper"):
        apply("fog", gray(n=1), 0.1)
