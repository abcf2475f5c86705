"""NeurALLNet and its registry."""

from nalln.models.neurallnet import NeurALLNet, NeurALLNetConfig
from nalln.models.neuron import LIF, LIFParameters, lif_sequence, lif_step
from nalln.models.registry import (
    ABLATION_VARIANTS,
    create,
    create_from_config,
    describe_models,
    list_models,
    model_config,
    register_model,
)

__all__ = [
    "ABLATION_VARIANTS",
    "LIF",
    "LIFParameters",
    "NeurALLNet",
    "NeurALLNetConfig",
    "create",
    "create_from_config",
    "describe_models",
    "lif_sequence",
    "lif_step",
    "list_models",
    "model_config",
    "register_model",
]
