"""Model registry in the style of timm: names map to configurations, ``create`` builds them.

Ablation variants are registered as configurations of the same class, never as copies of code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from nalln.errors import NallnError
from nalln.models.neurallnet import NeurALLNet, NeurALLNetConfig

_REGISTRY: dict[str, tuple[Callable[[Any], nn.Module], type, dict[str, Any], str]] = {}


def register_model(
    name: str,
    builder: Callable[[Any], nn.Module],
    config_cls: type,
    defaults: dict[str, Any] | None = None,
    description: str = "",
) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = (builder, config_cls, dict(defaults or {}), description)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def describe_models() -> dict[str, str]:
    return {n: v[3] for n, v in sorted(_REGISTRY.items())}


def _entry(name: str) -> tuple[Callable[[Any], nn.Module], type, dict[str, Any], str]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise NallnError(
            f"unknown model {name!r}; known models: {', '.join(list_models())}"
        ) from None


def model_config(name: str, **overrides: Any) -> Any:
    """The configuration ``create(name, **overrides)`` would build."""
    _, config_cls, defaults, _ = _entry(name)
    merged = {**defaults, **overrides}
    if hasattr(config_cls, "from_dict"):
        base = dataclasses.asdict(config_cls())
        base.update(merged)
        return config_cls.from_dict(base)
    return config_cls(**merged)


def create(name: str = "neurallnet", **overrides: Any) -> nn.Module:
    """Build a registered model; keyword arguments override its configuration fields."""
    builder = _entry(name)[0]
    return builder(model_config(name, **overrides))


def create_from_config(name: str, config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from a stored full configuration (checkpoints use this)."""
    builder, config_cls, _, _ = _entry(name)
    return builder(config_cls.from_dict(dict(config)))


_ABLATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "neurallnet": ({}, "full NeurALLNet (paper configuration, reconstructed)"),
    "neurallnet_no_se": ({"use_se": False}, "ablation: no Squeeze-and-Excitation"),
    "neurallnet_no_refine": ({"use_refinement": False}, "ablation: no refinement block"),
    "neurallnet_small_head": ({"head_hidden": 32}, "ablation: classifier head 256->32->4"),
    "neurallnet_no_bn": ({"batchnorm": False}, "ablation: no BatchNorm (conv biases instead)"),
}

for _name, (_defaults, _desc) in _ABLATIONS.items():
    register_model(_name, NeurALLNet, NeurALLNetConfig, _defaults, _desc)

ABLATION_VARIANTS = tuple(_ABLATIONS)
