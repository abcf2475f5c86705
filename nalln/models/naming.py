"""The one source of layer names: torch module paths -> NIR node, plan stage and grid names.

NIR node names cannot hold dots, so ``stages.0.pw_lif`` becomes ``stages_0_pw_lif``; the plan,
the fixed-point grid and every trace key use the NIR name. Everything that needs a block's
layer names derives them here (the exporter, the fake-quantised network, the grid).
"""

from __future__ import annotations


def node_name(module_name: str) -> str:
    """NIR node name of a torch module path."""
    return module_name.replace(".", "_")


def neuron_name(block: str, part: str) -> str:
    """Plan stage (LIF node) of part ``dw`` or ``pw`` of block ``block`` (e.g. ``stages.0``)."""
    return f"{node_name(block)}_{part}_lif"


def conv_name(block: str, part: str) -> str:
    """NIR conv node of part ``dw`` or ``pw`` of block ``block``."""
    return f"{node_name(block)}_{part}_conv"


def gated_stage(block: str) -> str:
    """The plan stage (the pointwise LIF) that the SE gate of block ``block`` feeds."""
    return neuron_name(block, "pw")


STEM_CONV, STEM_LIF = "stem_conv", "stem_lif"
HEAD_POOL, HEAD_FLATTEN = "head_pool", "head_flatten"
HEAD_FC1, HEAD_LIF, HEAD_FC2 = "head_fc1", "head_lif", "head_fc2"
