"""Temporal-fusion Grad-CAM against maps computed by hand on tiny networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nalln.analysis.gradcam import default_layer, gradcam_layers, temporal_gradcam
from nalln.errors import NallnError
from nalln.models.blocks import fold_time, unfold_time
from nalln.models.neuron import LIF, LIFParameters


class LinearTemporal(nn.Module):
    """A_t = (t + 1) * conv(x); logits = mean_t fc(mean_hw(A_t)): every gradient is known."""

    def __init__(self, steps: int = 3) -> None:
        super().__init__()
        self.num_steps = steps
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.fc = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[0.5, 1.0], [2.0, -1.0], [-1.0, 0.25]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.arange(1, self.num_steps + 1, dtype=x.dtype)
        x = fold_time(x, self.num_steps) * t.repeat_interleave(x.shape[0]).view(-1, 1, 1, 1)
        a = self.conv(x)
        return unfold_time(self.fc(a.mean(dim=(2, 3))), self.num_steps).mean(0)


def test_time_averaged_map_matches_hand_computation():
    torch.manual_seed(0)
    model = LinearTemporal(steps=3)
    x = torch.randn(2, 1, 4, 5)
    res = temporal_gradcam(model, x, "conv", target=torch.tensor([0, 1]))
    T, hw = 3, 20
    conv_w = np.array([1.0, -2.0])
    fc_w = np.array([[0.5, 1.0], [2.0, -1.0], [-1.0, 0.25]])
    for b, k in enumerate([0, 1]):
        xb = x[b, 0].numpy()
        # A_t[c] = (t+1) * w_c * x  ->  mean over t: mean(1..T) * w_c * x
        a_bar = np.stack([np.mean(np.arange(1, T + 1)) * w * xb for w in conv_w])
        # d y_k / d A_t[c, i, j] = fc[k, c] / (T * h * w) at every step; its time mean is the same
        alpha = fc_w[k] / (T * hw)
        expected = np.maximum((alpha[:, None, None] * a_bar).sum(0), 0.0)
        assert np.allclose(res.maps[b].numpy(), expected, atol=1e-6)
        assert np.allclose(res.weights[b].numpy(), alpha, atol=1e-7)


class SpikingToy(nn.Module):
    """conv -> BatchNorm -> LIF (T=1) -> GAP -> fc: the gradient goes through the ATan surrogate."""

    def __init__(self) -> None:
        super().__init__()
        self.num_steps = 1
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.lif = LIF(1, LIFParameters(tau=2.0, v_th=1.0, alpha=2.0))
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.5, -0.5]).view(2, 1, 1, 1))
            self.bn.running_mean.copy_(torch.tensor([0.2, -0.1]))
            self.bn.running_var.copy_(torch.tensor([2.0, 0.5]))
            self.bn.weight.copy_(torch.tensor([1.2, 0.8]))
            self.bn.bias.copy_(torch.tensor([0.1, 0.3]))
            self.fc.weight.copy_(torch.tensor([[1.0, -0.5], [0.3, 2.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lif(self.bn(self.conv(x))).mean(dim=(2, 3)))


def test_surrogate_gradient_map_matches_hand_computation():
    torch.manual_seed(1)
    model = SpikingToy().eval()
    x = torch.randn(1, 1, 3, 3)
    stats = model.bn.running_mean.clone(), model.bn.running_var.clone()
    res = temporal_gradcam(model, x, "conv", target=1)
    w = np.array([1.5, -0.5])
    mean, var = stats[0].numpy(), stats[1].numpy()
    gamma, beta = np.array([1.2, 0.8]), np.array([0.1, 0.3])
    scale = gamma / np.sqrt(var + model.bn.eps)
    fc = np.array([0.3, 2.0])  # row of class 1
    a = np.stack([wc * x[0, 0].numpy() for wc in w])  # conv output [2, 3, 3]
    u = scale[:, None, None] * (a - mean[:, None, None]) + beta[:, None, None]  # membrane (T=1)
    alpha = 2.0
    surrogate = (alpha / 2) / (1 + (np.pi / 2 * alpha * (u - 1.0)) ** 2)
    grad = fc[:, None, None] / 9 * surrogate * scale[:, None, None]
    weights = grad.mean(axis=(1, 2))
    expected = np.maximum((weights[:, None, None] * a).sum(0), 0)
    assert np.allclose(res.maps[0].numpy(), expected, atol=1e-6)
    # BatchNorm used its running statistics and did not update them; modes are restored
    assert torch.equal(model.bn.running_mean, stats[0])
    assert torch.equal(model.bn.running_var, stats[1])
    assert not model.training and not model.bn.training


def test_neurallnet_map_and_modes(tiny_run):
    from nalln.runs import load_model

    loaded = load_model(tiny_run)
    model = loaded.model
    bn_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    x = loaded.preprocess(torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8))
    layer = default_layer(model)
    assert layer == "refine.pw.conv"
    res = temporal_gradcam(model, x, layer)
    assert res.maps.shape == (3, *model.config.feature_size * np.ones(2, dtype=int))
    assert torch.all(res.maps >= 0)
    assert res.num_steps == model.num_steps
    with torch.no_grad():
        assert torch.equal(res.target, model(x).argmax(1))  # the predicted class by default
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(bn_before[k], after[k]) for k in after)
    assert not any(m.training for m in model.modules())
    up = res.upsampled((32, 32))
    assert up.shape == (3, 32, 32) and up.min() >= 0 and up.max() <= 1


def test_stem_layer_before_the_time_fold_is_supported(tiny_run):
    from nalln.runs import load_model

    loaded = load_model(tiny_run)
    x = loaded.preprocess(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8))
    res = temporal_gradcam(loaded.model, x, "stem.conv")
    assert res.maps.shape == (2, 16, 16)


def test_layer_listing_and_default_without_refinement():
    import nalln

    model = nalln.create(
        "neurallnet_no_refine", image_size=32, width_multiplier=0.25, head_hidden=8
    ).eval()
    layers = gradcam_layers(model, 32)
    assert "stem.conv" in layers and "stages.3.pw.conv" in layers
    assert not any(name.startswith("head") for name in layers)
    assert default_layer(model) == "stages.3.pw.conv"


def test_unknown_layer_is_an_error():
    with pytest.raises(NallnError, match="does not exist"):
        temporal_gradcam(LinearTemporal(), torch.zeros(1, 1, 2, 2), "nope")


def test_auto_layer_is_the_papers_layer_at_224_and_a_finer_one_at_64() -> None:
    import nalln
    from nalln.analysis.gradcam import auto_layer, feature_map_sizes

    big = nalln.create("neurallnet", image_size=224)
    big_sizes = feature_map_sizes(big, 224)
    assert auto_layer(big, big_sizes) == default_layer(big) == "refine.pw.conv"
    assert big_sizes["refine.pw.conv"] == (7, 7)
    small = nalln.create("neurallnet", image_size=64)
    sizes = feature_map_sizes(small, 64)
    assert sizes["refine.pw.conv"] == (2, 2)
    assert auto_layer(small, sizes) == "stages.1.pw.conv" and sizes["stages.1.pw.conv"] == (8, 8)
