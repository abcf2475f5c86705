"""Device choice: CUDA gets full float32 (TF32 off) unless the user asks for TF32."""

from __future__ import annotations

import pytest
import torch

from nalln.inference import TF32_ENV, pick_device, use_full_fp32_on_cuda


@pytest.fixture
def restore_tf32():
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_full_fp32_is_the_default(monkeypatch, restore_tf32):
    monkeypatch.delenv(TF32_ENV, raising=False)
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    assert use_full_fp32_on_cuda() is False
    assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cuda.matmul.allow_tf32 is False


def test_tf32_can_be_kept(monkeypatch, restore_tf32):
    monkeypatch.setenv(TF32_ENV, "1")
    assert use_full_fp32_on_cuda() is True
    assert torch.backends.cudnn.allow_tf32 is True
    assert torch.backends.cuda.matmul.allow_tf32 is True


def test_cpu_choice_leaves_cuda_settings_alone(restore_tf32):
    torch.backends.cudnn.allow_tf32 = True
    assert pick_device("cpu") == torch.device("cpu")
    assert torch.backends.cudnn.allow_tf32 is True
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected
