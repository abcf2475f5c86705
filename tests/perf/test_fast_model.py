"""The fast inference path against the reference model: same predictions, logits within 1e-5."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nalln.data.dataset import scan
from nalln.inference import predict_logits
from nalln.models.fast import FastNeurALLNet, fast_model, fast_predict_logits
from nalln.models.fold import fused_layer
from nalln.runs import load_model

TOL = 1e-5


def _compare(ref: torch.nn.Module, fast: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        a = ref.eval()(x)
        b = fast(x)
    assert torch.equal(a.argmax(1), b.argmax(1))
    return float((a - b).abs().max())


def test_fold_batchnorm_equals_conv_then_bn() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2)
    bn = torch.nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused_layer(conv, bn)(x), bn(conv(x)), atol=1e-5, rtol=0)
    lin, bn1 = torch.nn.Linear(5, 3, bias=False), torch.nn.BatchNorm1d(3).eval()
    with torch.no_grad():
        bn1.running_mean.uniform_(-1, 1)
        z = torch.randn(4, 5)
        torch.testing.assert_close(fused_layer(lin, bn1)(z), bn1(lin(z)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("channels_last", [True, False])
def test_fast_equals_reference_on_active_model(active_model, rates_of, channels_last) -> None:
    x = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert min(rates_of(active_model, x).values()) > 0.005  # every layer fires
    fast = fast_model(active_model, channels_last=channels_last)
    assert isinstance(fast, FastNeurALLNet)
    assert _compare(active_model, fast, x) <= TOL


@pytest.mark.parametrize(
    ("name", "cfg"),
    [
        ("neurallnet_no_bn", {}),
        ("neurallnet_no_se", {}),
        ("neurallnet_no_refine", {}),
        ("neurallnet_small_head", {}),
        ("neurallnet", {"se_position": "spikes"}),
        ("neurallnet", {"head_hidden": 0}),
        ("neurallnet", {"num_steps": 2, "tau": 3.0, "v_threshold": 0.7}),
    ],
)
def test_fast_equals_reference_for_every_variant(make_model, name, cfg) -> None:
    model = make_model(name, 32, width_multiplier=0.25, **cfg)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert _compare(model, fast_model(model), x) <= TOL


def test_fast_path_on_trained_run(tiny_run: Path, synth_root: Path) -> None:
    """The tiny trained model on its synthetic images: identical predictions via both paths."""
    loaded = load_model(tiny_run)
    index = scan(synth_root)
    from nalln.data.dataset import load_images

    images = load_images(index, index.records, loaded.image_size, progress=False)
    ref = predict_logits(loaded.model, loaded.preprocess, images, batch_size=16)
    fast = fast_predict_logits(loaded.model, loaded.preprocess, images, batch_size=16)
    assert ref.shape == fast.shape == (len(images), len(loaded.class_names))
    assert torch.equal(ref.argmax(1), fast.argmax(1))
    assert float((ref - fast).abs().max()) <= TOL


def test_predict_files_matches_in_memory(tiny_run: Path, synth_root: Path) -> None:
    from nalln.data.dataset import load_images
    from nalln.models.fast import predict_files

    loaded = load_model(tiny_run)
    index = scan(synth_root)
    records = index.records[:10]
    images = load_images(index, records, loaded.image_size, progress=False)
    want = fast_predict_logits(loaded.model, loaded.preprocess, images)
    got = predict_files(
        loaded.model,
        loaded.preprocess,
        [index.root / r.path for r in records],
        loaded.image_size,
        batch_size=3,
    )
    assert torch.equal(got, want)


def test_predict_files_names_unreadable_file(tiny_run: Path, tmp_path: Path) -> None:
    from nalln.errors import DataError
    from nalln.models.fast import predict_files

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    loaded = load_model(tiny_run)
    with pytest.raises(DataError, match="broken.png"):
        predict_files(loaded.model, loaded.preprocess, [bad], loaded.image_size)


def test_fast_model_is_a_frozen_copy(active_model) -> None:
    fast = fast_model(active_model)
    assert not any(p.requires_grad for p in fast.parameters())
    assert all(p.requires_grad for p in active_model.parameters())  # source untouched
    assert fast_model(fast) is fast
    with pytest.raises(TypeError):
        fast_model(torch.nn.Linear(2, 2))
