"""NeurALLNet written the way a SpikingJelly 2.0.0 user writes it: the paper's baseline.

Choice (documented in docs/benchmarks.md): SpikingJelly's idiomatic multi-step mode, as in its
own convolutional examples (``functional.set_step_mode(net, "m")``): the image is repeated T
times (``x.unsqueeze(0).repeat(T, 1, 1, 1, 1)``), every stateless layer (``layer.Conv2d``,
``layer.BatchNorm2d``, ``layer.Linear``, ``layer.BatchNorm1d``) folds ``[T, B, ...]`` into one
batch, and ``neuron.LIFNode(tau=2, decay_input=True, v_reset=0, surrogate ATan)`` runs its
multi-step kernel. The paper states SpikingJelly with these neuron defaults and direct coding;
this is the form its tutorials teach, so it is the likeliest form of the paper's code. Unlike
nalln's reference model it does not compute the stem once (the repeated input goes through the
stem convolution at every step), which is exactly the work the fast path saves.

Weights come from a nalln model. SpikingJelly's LIF on input X equals snnTorch's ``Leaky`` on
X / tau, so the BatchNorm (or, without BatchNorm, the convolution) feeding each neuron is scaled by
tau; the SE gate reads that scaled current, so its first FC layer is scaled by 1/tau to see the
same input as ours. :func:`check_equivalence` measures that both compute the same function.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

from nalln.models import NeurALLNet


def _lif(tau: float, v_th: float, alpha: float) -> nn.Module:
    return neuron.LIFNode(
        tau=float(tau),
        decay_input=True,
        v_threshold=float(v_th),
        v_reset=0.0,
        surrogate_function=surrogate.ATan(alpha=alpha),
        step_mode="m",
    )


class SJConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, groups: int, bn: bool) -> None:
        mods: dict[str, nn.Module] = {
            "conv": layer.Conv2d(
                c_in, c_out, k, stride, k // 2, groups=groups, bias=not bn, step_mode="m"
            )
        }
        if bn:
            mods["bn"] = layer.BatchNorm2d(c_out, step_mode="m")
        super().__init__()
        for name, m in mods.items():
            self.add_module(name, m)


class SJSqueezeExcite(nn.Module):
    """SE on ``[T, B, C, H, W]``: one gate per step and sample, as in nalln."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = layer.Linear(channels, hidden, step_mode="m")
        self.fc2 = layer.Linear(hidden, channels, step_mode="m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(3, 4))))))
        return x * g[..., None, None]


class SJBlock(nn.Module):
    def __init__(self, ref: nn.Module, lif: tuple[float, float, float], bn: bool) -> None:
        super().__init__()
        dw, pw = ref.dw.conv, ref.pw.conv
        c_in, c_out = dw.in_channels, pw.out_channels
        self.dw = SJConvBN(c_in, c_in, 3, dw.stride[0], c_in, bn)
        self.dw_lif = _lif(*lif)
        self.pw = SJConvBN(c_in, c_out, 1, 1, 1, bn)
        self.se = SJSqueezeExcite(c_out, ref.se.fc1.out_features) if ref.se is not None else None
        self.se_position = ref.se_position
        self.pw_lif = _lif(*lif)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.dw_lif(self.dw(x)))
        if self.se is not None and self.se_position == "current":
            x = self.se(x)
        x = self.pw_lif(x)
        if self.se is not None and self.se_position == "spikes":
            x = self.se(x)
        return x


class SJNeurALLNet(nn.Module):
    """NeurALLNet in SpikingJelly multi-step mode; input ``[B, 3, H, W]`` -> logits ``[B, K]``."""

    def __init__(self, ref: NeurALLNet) -> None:
        super().__init__()
        cfg = ref.config
        self.num_steps = cfg.num_steps
        self.tau = cfg.tau
        lif = (cfg.tau, cfg.v_threshold, cfg.surrogate_alpha)
        bn = cfg.batchnorm
        c = ref.stem.conv
        self.stem = SJConvBN(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], 1, bn)
        self.stem_lif = _lif(*lif)
        self.stages = nn.Sequential(*(SJBlock(b, lif, bn) for b in ref.stages))
        self.refine = SJBlock(ref.refine, lif, bn) if ref.refine is not None else None
        h = ref.head
        self.head = nn.Module()
        if h.fc1 is not None:
            self.head.fc1 = layer.Linear(h.fc1.in_features, h.fc1.out_features, bias=not bn)
            self.head.bn = layer.BatchNorm1d(h.fc1.out_features) if bn else None
            self.head.lif = _lif(*lif)
        else:
            self.head.fc1 = self.head.bn = self.head.lif = None
        self.head.fc2 = layer.Linear(h.fc2.in_features, h.fc2.out_features)
        functional.set_step_mode(self, "m")
        self._load_from(ref)

    @torch.no_grad()
    def _load_from(self, ref: NeurALLNet) -> None:
        """Copy nalln's weights, folding SpikingJelly's 1/tau input scale (see module doc)."""
        sd = {k: v for k, v in ref.state_dict().items() if "lif" not in k}
        missing, unexpected = self.load_state_dict(sd, strict=False)
        bad = [k for k in missing if "lif" not in k]
        if bad or unexpected:
            raise RuntimeError(f"weight mapping failed: missing {bad}, unexpected {unexpected}")
        tau = self.tau
        feeds: list[nn.Module] = [self.stem]
        for blk in [*self.stages, *([self.refine] if self.refine is not None else [])]:
            feeds += [blk.dw, blk.pw]
            if blk.se is not None and blk.se_position == "current":
                blk.se.fc1.weight.mul_(1.0 / tau)  # the gate reads the tau-scaled current
        for cb in feeds:
            target = cb.bn if hasattr(cb, "bn") else cb.conv
            target.weight.mul_(tau)
            target.bias.mul_(tau)
        if self.head.fc1 is not None:
            target = self.head.bn if self.head.bn is not None else self.head.fc1
            target.weight.mul_(tau)
            if target.bias is not None:
                target.bias.mul_(tau)

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step logits ``[T, B, K]``; resets the neurons afterwards."""
        x_seq = x.unsqueeze(0).repeat(self.num_steps, 1, 1, 1, 1)
        x_seq = self.stem_lif(self.stem(x_seq))
        x_seq = self.stages(x_seq)
        if self.refine is not None:
            x_seq = self.refine(x_seq)
        z = x_seq.mean(dim=(3, 4))
        if self.head.fc1 is not None:
            z = self.head.fc1(z)
            if self.head.bn is not None:
                z = self.head.bn(z)
            z = self.head.lif(z)
        out = self.head.fc2(z)
        functional.reset_net(self)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_steps(x).mean(0)


@torch.no_grad()
def check_equivalence(ref: NeurALLNet, sj: SJNeurALLNet, x: torch.Tensor) -> dict[str, float]:
    """Compare logits of the two on ``x`` (both in eval mode)."""
    a, b = ref.eval()(x), sj.eval()(x)
    return {
        "max_abs_logit_diff": float((a - b).abs().max()),
        "same_predictions": bool(torch.equal(a.argmax(1), b.argmax(1))),
    }
