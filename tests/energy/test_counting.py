"""Counts on tiny layers against values worked out by hand and by brute force."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import nalln
from nalln.energy.counting import count_model
from nalln.energy.fanout import fanout_map


def _count(layer: nn.Module, x: torch.Tensor):
    """Counts of one layer on one batch (T = 1)."""
    net = nn.Sequential(layer)
    counts = count_model(net, x, batch_size=len(x))
    return counts.layers[0], counts


def _ones_conv(cin: int, cout: int, k: int, **kw) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, k, bias=False, **kw)
    nn.init.ones_(conv.weight)
    return conv


def test_padding_excluded() -> None:
    # 3x3 kernel, padding 1, 3x3 input of ones: corners see 4 inputs, edges 6, centre 9
    L, c = _count(_ones_conv(1, 1, 3, padding=1), torch.ones(1, 1, 3, 3))
    assert c.per_inference(L.ac.sum()) == 4 * 4 + 4 * 6 + 9 == 49
    assert c.per_inference(L.dense.sum()) == 49
    assert L.binary and c.per_inference(L.mac.sum()) == 0


def test_stride() -> None:
    # stride 2, padding 1 on 4x4: outputs see 2x2, 2x3, 3x2, 3x3 valid inputs
    L, c = _count(_ones_conv(1, 1, 3, stride=2, padding=1), torch.ones(1, 1, 4, 4))
    assert L.out_shape == (1, 2, 2)
    assert c.per_inference(L.ac.sum()) == 4 + 6 + 6 + 9


def test_groups() -> None:
    x = torch.ones(1, 4, 3, 3)
    depthwise, c1 = _count(_ones_conv(4, 4, 3, padding=1, groups=4), x)
    full, c2 = _count(_ones_conv(4, 4, 3, padding=1), x)
    assert depthwise.kind == "depthwise"
    assert c1.per_inference(depthwise.ac.sum()) == 4 * 49
    assert c2.per_inference(full.ac.sum()) == 4 * 4 * 49


def test_zero_weights() -> None:
    pw = _ones_conv(8, 8, 1)
    with torch.no_grad():
        pw.weight.view(-1)[::8] = 0.0  # 1/8 of the weights are zero
    x = torch.zeros(1, 8, 2, 2)
    x[0, :3] = 1.0  # 3 of 8 input channels spike at every position
    L, c = _count(pw, x)
    assert L.kind == "pointwise" and L.nonzero_weights == 56
    nonzero_per_column = (pw.weight[:, :, 0, 0] != 0).sum(0)
    expected = int(nonzero_per_column[:3].sum()) * 4
    assert c.per_inference(L.ac.sum()) == expected
    assert c.per_inference(L.dense.sum()) == 64 * 4


def test_linear_hand() -> None:
    fc = nn.Linear(4, 3)
    with torch.no_grad():
        fc.weight.copy_(
            torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 1.0, 0.0], [3.0, 1.0, 0.0, 1.0]])
        )
    # nonzeros per input column: 2, 2, 2, 1; input spikes on columns 0, 2, 3
    L, c = _count(fc, torch.tensor([[1.0, 0.0, 1.0, 1.0]]))
    assert c.per_inference(L.ac.sum()) == 2 + 2 + 1
    assert c.per_inference(L.dense.sum()) == 12


def test_analog_vs_binary() -> None:
    conv = _ones_conv(1, 1, 3, padding=1)
    binary, cb = _count(conv, torch.ones(1, 1, 3, 3))
    analog, ca = _count(conv, torch.full((1, 1, 3, 3), 0.5))
    signed, cs = _count(conv, -torch.ones(1, 1, 3, 3))
    assert binary.binary and not analog.binary and signed.binary  # NeuroBench: {-1, 0, 1}
    assert ca.per_inference(analog.mac.sum()) == 49 and ca.per_inference(analog.ac.sum()) == 0
    assert cs.per_inference(signed.ac.sum()) == 49


def _brute_force(conv: nn.Conv2d, x: torch.Tensor) -> int:
    """Explicit loop over outputs and kernel taps: (nonzero input, nonzero weight) pairs."""
    w = conv.weight
    cout, cin_g, kh, kw = w.shape
    g = conv.groups
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    n, cin, H, W = x.shape
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    total = 0
    for b, o, i, j in itertools.product(range(n), range(cout), range(Ho), range(Wo)):
        grp = o // (cout // g)
        for c, u, v in itertools.product(range(cin_g), range(kh), range(kw)):
            r, s = i * sh - ph + u * dh, j * sw - pw + v * dw
            if 0 <= r < H and 0 <= s < W and w[o, c, u, v] != 0:
                total += int(x[b, grp * cin_g + c, r, s] != 0)
    return total


@pytest.mark.parametrize(
    ("cin", "cout", "k", "stride", "padding", "groups", "dilation"),
    [(4, 6, 3, 2, 1, 2, 1), (3, 3, 3, 1, 2, 3, 2), (2, 4, 1, 1, 0, 1, 1), (4, 4, 5, 3, 2, 4, 1)],
)
def test_matches_brute_force(cin, cout, k, stride, padding, groups, dilation) -> None:
    g = torch.Generator().manual_seed(cin * 100 + k)
    conv = nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=True)
    with torch.no_grad():
        conv.weight.mul_((torch.rand(conv.weight.shape, generator=g) > 0.3).float())
    x = (torch.rand(2, cin, 7, 6, generator=g) > 0.6).float()
    L, c = _count(conv, x)
    assert L.ac.sum() == _brute_force(conv, x)  # summed over the 2 samples


def test_fanout_map_borders() -> None:
    F = fanout_map(_ones_conv(1, 1, 3, padding=1), (1, 3, 3))
    assert F[0].tolist() == [[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]]


def test_time_folded_model_per_step_and_once() -> None:
    torch.manual_seed(0)
    model = nalln.create(
        "neurallnet", image_size=32, width_multiplier=0.25, head_hidden=8, refine_channels=16
    ).eval()
    x = torch.randn(3, 3, 32, 32)
    counts = count_model(model, x, batch_size=2)  # 2 batches: 2 + 1 images
    T = model.num_steps
    stem = counts.layer("stem.conv")
    assert stem.once and not stem.spike_input and not stem.binary
    assert stem.mac[1:].sum() == 0 and stem.mac[0] > 0  # computed once, recorded at step 0
    dw = counts.layer("stages.0.dw.conv")
    assert dw.spike_input and dw.population == "stages.0.dw_lif" and not dw.once
    assert len(dw.dense) == T and (dw.dense == dw.dense[0]).all()
    # the stem's output spikes are exactly the dw conv's nonzero inputs, step by step
    stem_lif = counts.population("stem_lif")
    assert stem_lif.source == "stem.conv"
    assert (stem_lif.spikes == dw.in_nonzero).all()
    se = counts.layer("stages.0.se.fc1")
    assert se.role == "se" and not se.spike_input
    head_fc1, head_fc2 = counts.layer("head.fc1"), counts.layer("head.fc2")
    assert not head_fc1.spike_input and head_fc2.spike_input and head_fc2.population is None
    gap = next(e for e in counts.extras if e.kind == "gap")
    assert gap.binary_input and gap.adds == x.shape[0] * T * gap.elements
    t = counts.totals
    assert t["membrane_updates"] == sum(p.neurons for p in counts.populations) * T
    assert 0 <= t["firing_rate"] <= 1
