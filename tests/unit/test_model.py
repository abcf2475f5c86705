import pytest
import torch
from torch import nn

import nalln
from nalln.errors import NallnError
from nalln.models import ABLATION_VARIANTS, NeurALLNet, create, list_models, model_config
from nalln.models.summary import summarise

PAPER_PARAMETERS = 336_544


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_default_model_matches_paper_parameter_count_within_one_percent() -> None:
    n = n_params(create("neurallnet"))
    assert n == 337_204
    assert abs(n - PAPER_PARAMETERS) / PAPER_PARAMETERS < 0.01


def test_registry_lists_every_ablation_and_rejects_unknown_names() -> None:
    assert set(ABLATION_VARIANTS) <= set(list_models())
    with pytest.raises(NallnError, match="unknown model 'resnet'"):
        create("resnet")


def test_ablations_remove_what_they_say() -> None:
    full = create("neurallnet")
    no_se = create("neurallnet_no_se")
    no_ref = create("neurallnet_no_refine")
    small = create("neurallnet_small_head")
    no_bn = create("neurallnet_no_bn")
    assert all(s.se is None for s in no_se.stages) and all(s.se is not None for s in full.stages)
    assert no_ref.refine is None and full.refine.pw.conv.out_channels == 256
    assert full.refine.pw.conv.in_channels == 384
    assert small.head.fc1.out_features == 32
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.modules())
    assert n_params(no_se) < n_params(no_ref) < n_params(small) < n_params(full)


@pytest.mark.parametrize(
    "bad",
    [
        {"num_steps": 0},
        {"se_position": "weights"},
        {"image_size": 16},
        {"tau": 1.0},
        {"widths": [0]},
    ],
)
def test_invalid_configs_raise_user_errors(bad: dict) -> None:
    with pytest.raises(NallnError):
        model_config("neurallnet", **bad)


def test_width_multiplier_and_config_roundtrip() -> None:
    cfg = model_config("neurallnet", width_multiplier=0.5, image_size=64)
    assert cfg.stage_widths == (16, 48, 96, 192)
    again = type(cfg).from_dict(cfg.to_dict())
    assert again == cfg
    with pytest.raises(NallnError, match="unknown model config key"):
        type(cfg).from_dict({**cfg.to_dict(), "depth": 3})


def test_stateless_layers_run_all_steps_as_one_batch() -> None:
    model = create("neurallnet", image_size=32, width_multiplier=0.25, num_steps=4).eval()
    calls: dict[str, list[int]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            mod.register_forward_hook(
                lambda m, i, o, name=name: calls.setdefault(name, []).append(i[0].shape[0])
            )
    with torch.no_grad():
        model(torch.randn(3, 3, 32, 32))
    assert calls["stem.conv"] == [3]  # direct coding: the stem sees each image once
    assert calls["stages.0.dw.conv"] == [12] and calls["refine.pw.conv"] == [12]  # T*B, one call
    assert calls["head.fc2"] == [12]
    assert all(len(v) == 1 for v in calls.values())


def test_forward_shapes_and_per_step_logits() -> None:
    model = create("neurallnet", image_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        steps = model.forward_steps(x)
        logits = model(x)
    assert steps.shape == (4, 2, 4) and logits.shape == (2, 4)
    assert torch.allclose(logits, steps.mean(0))
    with pytest.raises(NallnError, match="model input must be"):
        model(torch.randn(2, 1, 64, 64))


def test_same_seed_same_weights_and_outputs() -> None:
    torch.manual_seed(42)
    a = create("neurallnet", image_size=32)
    torch.manual_seed(42)
    b = create("neurallnet", image_size=32)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_summary_counts_every_parameter_once() -> None:
    s = summarise(create("neurallnet"))
    assert s["parameters"] == 337_204 == sum(r["parameters"] for r in s["layers"])
    assert s["fp32_bytes"] == 4 * 337_204
    refine = next(r for r in s["layers"] if r["name"] == "refine.pw.conv")
    assert refine["output_shape"] == [256, 7, 7]


def test_package_exports_create() -> None:
    assert isinstance(nalln.create("neurallnet", image_size=32), NeurALLNet)
