"""Odd tensors into the model and the prediction path: wrong shapes, dtypes, NaN, infinity,
extreme values. Each gives finite logits of the right shape or a one-line NallnError."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nalln
from nalln.data.transforms import Preprocess
from nalln.errors import DataError, NallnError
from nalln.inference import predict_logits

from .helpers import fuzz_settings, works_or_clean_error

TINY = {"image_size": 32, "width_multiplier": 0.25, "head_hidden": 16, "refine_channels": 64}
MODEL = nalln.create("neurallnet", **TINY).eval()
PRE = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
DTYPES = [torch.uint8, torch.float32, torch.float64, torch.float16, torch.int64, torch.bool]
SPECIALS = [float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 3e38, 0.0, 1.0, 255.0, -1.0]


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    ndim = draw(st.sampled_from([4, 4, 4, 3, 5, 2]))
    shape = [draw(st.integers(0, 3))] if ndim >= 4 else []
    if ndim >= 4:
        shape.append(draw(st.sampled_from([3, 3, 3, 1, 4])))
    shape += [draw(st.integers(0, 40)) for _ in range(max(ndim - len(shape), 0))]
    shape = shape[:ndim]
    dtype = draw(st.sampled_from(DTYPES))
    x = torch.zeros(shape).to(dtype)
    if x.numel() and dtype.is_floating_point:
        fill = draw(st.sampled_from(["uniform", "special", "sprinkle"]))
        gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        x = torch.rand(shape, generator=gen).to(dtype)
        if fill == "special":
            x = torch.full(shape, draw(st.sampled_from(SPECIALS))).to(dtype)
        elif fill == "sprinkle":
            x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(st.sampled_from(SPECIALS))
    elif x.numel() and dtype == torch.uint8:
        x = torch.randint(0, 256, shape, dtype=torch.uint8)
    return x


@fuzz_settings(150)
@given(x=tensors())
def test_prediction_path_answers_or_refuses(x: torch.Tensor) -> None:
    out = works_or_clean_error(predict_logits, MODEL, PRE, x, 2)
    if isinstance(out, Exception):
        return
    assert out.shape[0] == x.shape[0] and torch.isfinite(out).all()
    if x.shape[0]:
        assert out.shape == (x.shape[0], 4)


@fuzz_settings(150)
@given(x=tensors())
def test_model_forward_answers_or_refuses(x: torch.Tensor) -> None:
    with torch.no_grad():
        out = works_or_clean_error(MODEL, x)
    if not isinstance(out, Exception):
        assert out.shape == (x.shape[0], 4)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_images_are_refused_with_a_clear_error(value: float) -> None:
    """Without the check the network answers confidently: NaN never crosses a threshold."""
    x = torch.rand(3, 3, 32, 32)
    x[1, 0, 5, 5] = value
    with torch.no_grad():
        silent = MODEL(PRE(x))
    assert torch.isfinite(silent).all()  # the garbage the check prevents
    with pytest.raises(DataError, match="1 of 3 image"):
        predict_logits(MODEL, PRE, x)


def test_damaged_weights_are_reported_not_used() -> None:
    model = nalln.create("neurallnet", **TINY).eval()
    with torch.no_grad():
        model.head.fc2.bias[0] = float("nan")
    with pytest.raises(NallnError, match="NaN or infinite logits"):
        predict_logits(model, PRE, torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_extreme_but_finite_images_give_finite_answers() -> None:
    for value in (0.0, 1.0, 1e30, -1e30, 3e38):
        out = predict_logits(MODEL, PRE, torch.full((2, 3, 32, 32), value))
        assert torch.isfinite(out).all() and out.shape == (2, 4)


@pytest.mark.parametrize(
    "shape",
    [(3, 32, 32), (1, 2, 3, 32, 32), (2, 4, 32, 32), (2, 1, 32, 32), (2, 3, 0, 32), (2, 3, 32, 0)],
)
def test_wrong_shapes_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(NallnError, match=r"\[N, 3, H, W\]"):
        predict_logits(MODEL, PRE, torch.zeros(shape))
    with pytest.raises(NallnError, match=r"model input must be \[batch, 3, H, W\]"):
        MODEL(torch.zeros(shape))


def test_wrong_dtype_into_the_model_is_refused() -> None:
    with pytest.raises(NallnError, match="model input must be torch.float32"):
        MODEL(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
