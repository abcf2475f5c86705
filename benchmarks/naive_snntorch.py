"""NeurALLNet as a naive snnTorch user writes it: every layer called once per time step.

This is the loop of snnTorch's tutorials (``for step in range(num_steps): cur = conv(x);
spk, mem = lif(cur, mem)``): the stem convolution runs on the same image at every step, each
convolution runs on a batch of B images T times instead of once on T*B, and each ``Leaky``
neuron is called step by step with its membrane passed explicitly. It holds its own copy of a
nalln model's layers (same weights, same ``snntorch.Leaky`` neurons), so it computes exactly
the same function as nalln's reference model.
"""

from __future__ import annotations

import copy

import snntorch
import torch
from snntorch import surrogate
from torch import nn

from nalln.models import NeurALLNet


def _leaky(cfg) -> snntorch.Leaky:
    return snntorch.Leaky(
        beta=1.0 - 1.0 / cfg.tau,
        threshold=cfg.v_threshold,
        reset_mechanism="zero",
        spike_grad=surrogate.atan(alpha=cfg.surrogate_alpha),
    )


class NaiveSnnTorchNeurALLNet(nn.Module):
    """Input ``[B, 3, H, W]`` -> logits ``[B, K]`` (mean of the per-step logits)."""

    def __init__(self, ref: NeurALLNet) -> None:
        super().__init__()
        ref = copy.deepcopy(ref)
        cfg = ref.config
        self.num_steps = cfg.num_steps
        self.stem = ref.stem
        self.stages = ref.stages
        self.refine = ref.refine
        self.head = ref.head
        # one fresh snnTorch neuron per population, called with an explicit membrane
        self.neurons = nn.ModuleDict(
            {name.replace(".", "_"): _leaky(cfg) for name in ref.spiking_layers()}
        )

    def _block(self, blk: nn.Module, prefix: str, x: torch.Tensor, mem: dict) -> torch.Tensor:
        x, mem[f"{prefix}_dw_lif"] = self.neurons[f"{prefix}_dw_lif"](
            blk.dw(x), mem[f"{prefix}_dw_lif"]
        )
        x = blk.pw(x)
        if blk.se is not None and blk.se_position == "current":
            x = blk.se(x)
        x, mem[f"{prefix}_pw_lif"] = self.neurons[f"{prefix}_pw_lif"](x, mem[f"{prefix}_pw_lif"])
        if blk.se is not None and blk.se_position == "spikes":
            x = blk.se(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem = {name: neuron.reset_mem() for name, neuron in self.neurons.items()}
        out = []
        for _ in range(self.num_steps):
            s, mem["stem_lif"] = self.neurons["stem_lif"](self.stem(x), mem["stem_lif"])
            for i, blk in enumerate(self.stages):
                s = self._block(blk, f"stages_{i}", s, mem)
            if self.refine is not None:
                s = self._block(self.refine, "refine", s, mem)
            z = s.mean(dim=(2, 3))
            h = self.head
            if h.fc1 is not None:
                z = h.fc1(z)
                if h.bn is not None:
                    z = h.bn(z)
                z, mem["head_lif"] = self.neurons["head_lif"](z, mem["head_lif"])
            out.append(h.fc2(z))
        return torch.stack(out).mean(0)
