r"""Quantisation-aware NeurALLNet: the network Loihi runs, as a differentiable torch module.

:class:`FakeQuantNet` holds the *folded* parameters of a NeurALLNet (BatchNorm frozen at its
eval statistics and folded into the conv/linear before it; static SE gates folded into the
pointwise convs) and runs them on a :class:`~nalln.loihi.grid.FixedPointGrid`:

* weights ``round(w * weight_scale) / weight_scale`` clipped to 8 bits (dense layers: even
  integers, and the GAP before ``head.fc1`` folded in as Lava sees it, ``W / (h w)`` per
  position); biases ``round(b S) / S`` within 13 bits;
* the image rounded as the chip receives it, ``round(x * input_scale) / input_scale``;
* (hybrid SE) the gated current rounded to the integer grid, as our SE side-car sends it;
* LIF neurons with threshold 1 on currents in units of ``1 / S`` with ``S = vth + 2**-T``.

Rounding uses the straight-through estimator (the forward pass rounds, the backward pass sees
the identity inside the clip range), and the neurons use the model's surrogate gradient. For
tau = 2 and T <= 7 the forward pass *is* Loihi's integer arithmetic (module docstring of
:mod:`nalln.loihi.grid`): every spike equals the bit-exact emulator's (test
``test_fake_quant_forward_equals_emulator``).

:meth:`FakeQuantNet.bake` writes the on-grid values back into an ordinary NeurALLNet: conv and
linear layers hold the folded, quantised weights and every BatchNorm is set to the identity
with the folded bias as its shift, so the checkpoint loads everywhere and converts onto the
same grid.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nalln.errors import NallnError
from nalln.ir.se_mode import SEMode
from nalln.loihi.arithmetic import BIAS_MAX, INPUT_MAX
from nalln.loihi.grid import FixedPointGrid, LayerGrid, check_exact_dynamics
from nalln.loihi.onchip_se import OnchipSE
from nalln.models import naming
from nalln.models.blocks import SpikingDSBlock, fold_time, round_current, se_blocks, unfold_time
from nalln.models.fold import fold_batchnorm
from nalln.models.neurallnet import NeurALLNet, NeurALLNetConfig
from nalln.models.neuron import LIF


def straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` in the forward pass, gradient of ``x`` in the backward pass."""
    return x + (q - x).detach()


def quantise_weight_ste(w: torch.Tensor, g: LayerGrid, pool: int = 1) -> torch.Tensor:
    """Fake-quantised weight on ``g``; ``pool`` > 1: the grid applies to ``w / pool`` (a GAP
    folded into the dense layer after it)."""
    lo, hi = g.w_range
    ws = g.weight_scale
    wc = torch.clamp(w / pool, lo / ws, hi / ws)
    wd = wc.detach().double()  # round in float64 whatever the module's dtype: bake == forward
    q = torch.round(wd * ws) if g.kind == "conv" else 2.0 * torch.round(wd * ws / 2.0)
    return straight_through(wc, (q / ws).to(w.dtype)) * pool


def quantise_bias_ste(b: torch.Tensor, scale: float) -> torch.Tensor:
    bc = torch.clamp(b, -BIAS_MAX / scale, BIAS_MAX / scale)
    q = torch.round(bc.detach().double() * scale) / scale
    return straight_through(bc, q.to(b.dtype))


def quantise_input(x: torch.Tensor, input_scale: float) -> torch.Tensor:
    """The image as the chip receives it (24-bit graded spikes)."""
    q = torch.round(x * input_scale).clamp(-INPUT_MAX, INPUT_MAX) / input_scale
    return straight_through(x, q)


@dataclass(frozen=True)
class _Layer:
    """Where a grid layer lives in the torch model."""

    name: str  # plan stage name
    weight: str  # parameter path of the conv / linear weight
    bn: str | None  # module path of the BatchNorm after it
    kind: str
    pool: int = 1  # GAP folded into a dense layer: h * w


def _layers(model: nn.Module) -> list[_Layer]:
    """The synaptic layers in forward order, named as the NIR export and plan name them."""
    has_bn = model.config.batchnorm
    out = [_Layer(naming.STEM_LIF, "stem.conv", "stem.bn" if has_bn else None, "conv")]
    for prefix, _ in model.named_blocks():
        for part in ("dw", "pw"):
            bn = f"{prefix}.{part}.bn" if has_bn else None
            out.append(
                _Layer(naming.neuron_name(prefix, part), f"{prefix}.{part}.conv", bn, "conv")
            )
    fs = model.config.feature_size
    head = model.head
    if head.fc1 is not None:
        bn = "head.bn" if head.bn is not None else None
        out.append(_Layer(naming.HEAD_LIF, "head.fc1", bn, "dense", fs * fs))
        out.append(_Layer(naming.HEAD_FC2, "head.fc2", None, "dense"))
    else:
        out.append(_Layer(naming.HEAD_FC2, "head.fc2", None, "dense", fs * fs))
    return out


def _folded(model: nn.Module, layer: _Layer) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias with the eval-mode BatchNorm folded in (float64 maths, float32 out)."""
    mod = model.get_submodule(layer.weight)
    bn = model.get_submodule(layer.bn) if layer.bn is not None else None
    w, b = fold_batchnorm(mod.weight, mod.bias, bn)
    return torch.from_numpy(w), torch.from_numpy(b)


def static_se_as_plain(model: nn.Module, gates: dict[str, np.ndarray]) -> nn.Module:
    """The static-SE network as an ordinary NeurALLNet without SE: each constant gate
    multiplies its pointwise BatchNorm's scale and shift (or the conv's weight and bias)."""
    blocks = se_blocks(model)
    if set(blocks) != set(gates):
        raise NallnError(f"static gates for {sorted(gates)}, SE blocks {sorted(blocks)}")
    cfg = NeurALLNetConfig.from_dict({**model.config.to_dict(), "use_se": False})
    plain = NeurALLNet(cfg)
    state = {k: v for k, v in model.state_dict().items() if ".se." not in k}
    plain.load_state_dict(state, strict=True)
    with torch.no_grad():
        for name in blocks:
            g = torch.as_tensor(gates[name], dtype=torch.float32)
            block: SpikingDSBlock = plain.get_submodule(name)
            if hasattr(block.pw, "bn"):
                block.pw.bn.weight.mul_(g)
                block.pw.bn.bias.mul_(g)
            else:
                block.pw.conv.weight.mul_(g.view(-1, 1, 1, 1))
                block.pw.conv.bias.mul_(g)
    return plain.eval()


class FakeQuantNet(nn.Module):
    """A NeurALLNet's folded parameters running on a fixed-point grid (see module docstring).

    ``quantise=False`` runs the same folded parameters in float (for comparison)."""

    def __init__(self, model: nn.Module, grid: FixedPointGrid) -> None:
        super().__init__()
        cfg = model.config
        check_exact_dynamics(cfg.num_steps, 1.0 / cfg.tau)
        self.config = cfg
        self.grid = grid
        self.quantise = True
        # None: every layer and the input on the grid; else only these layer names (and the
        # input if "input" is among them) - what a per-layer sensitivity study toggles
        self.quantised: frozenset[str] | None = None
        self.layers = _layers(model)
        names = [ly.name for ly in self.layers]
        if names != [g.name for g in grid.layers]:
            raise NallnError(f"the grid has layers {[g.name for g in grid.layers]}, model {names}")
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        self.geometry: dict[str, tuple] = {}
        for ly in self.layers:
            w, b = _folded(model, ly)
            self.weights[ly.name] = nn.Parameter(w.clone())
            self.biases[ly.name] = nn.Parameter(b.clone())
            mod = model.get_submodule(ly.weight)
            if ly.kind == "conv":
                self.geometry[ly.name] = (mod.stride, mod.padding, mod.groups)
        self.se = nn.ModuleDict()
        for name, m in se_blocks(model).items():
            key = naming.gated_stage(name)
            if grid.se_mode is SEMode.ONCHIP:  # the chip's integer gate (rounds by itself)
                self.se[key] = OnchipSE(m.se, grid.onchip_scales(key), cfg.num_steps)
                continue
            gate = copy.deepcopy(m.se)
            gate.current_scale = None  # _gate rounds (a re-tuned run's SE may carry one)
            self.se[key] = gate
        if self.se and not grid.se_mode.gated:
            raise NallnError("a model with SE gates needs a hybrid- or onchip-SE grid")
        self.lif = LIF(cfg.num_steps, cfg.lif)

    @property
    def num_steps(self) -> int:
        return self.config.num_steps

    def _wb(self, ly: _Layer) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = self.weights[ly.name], self.biases[ly.name]
        if not self._on_grid(ly.name):
            return w, b
        g = self.grid.layer(ly.name)
        return quantise_weight_ste(w, g, ly.pool), quantise_bias_ste(b, g.scale)

    def _synapse(self, ly: _Layer, x: torch.Tensor) -> torch.Tensor:
        w, b = self._wb(ly)
        if ly.kind == "conv":
            stride, padding, groups = self.geometry[ly.name]
            return F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
        if x.dim() == 4:  # GAP, folded into this dense layer on the chip
            x = x.mean(dim=(2, 3))
        return F.linear(x, w, b)

    def _gate(self, name: str, cur: torch.Tensor) -> torch.Tensor:
        y = self.se[name](cur)
        if isinstance(self.se[name], OnchipSE) or not self._on_grid(name):
            return y
        return round_current(y, self.grid.layer(name).scale)

    def _on_grid(self, name: str) -> bool:
        return self.quantise and (self.quantised is None or name in self.quantised)

    def forward_steps(
        self, x: torch.Tensor, spikes: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Per-step logits ``[T, B, K]``; ``spikes`` (a dict) receives every layer's spikes
        ``[T, B, ...]`` by plan stage name."""
        T = self.num_steps
        if self._on_grid("input"):
            x = quantise_input(x, self.grid.input_scale)
        h = None
        for k, ly in enumerate(self.layers):
            cur = self._synapse(ly, x if k == 0 else h)
            if k == 0:
                cur = fold_time(cur, T)
            if ly.name in self.se:
                cur = self._gate(ly.name, cur)
            if self.grid.layer(ly.name).readout:
                return unfold_time(cur, T)
            h = self.lif(cur).to(cur.dtype)
            if spikes is not None:
                spikes[ly.name] = unfold_time(h, T) > 0
        raise NallnError("the network has no readout layer")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_steps(x).mean(0)

    @torch.no_grad()
    def bake(self, template: nn.Module) -> nn.Module:
        """A copy of ``template`` (same architecture) holding this network's on-grid values:
        conv/linear = folded quantised weights, every BatchNorm the identity whose shift is the
        folded quantised bias, SE modules (hybrid) the fine-tuned ones."""
        model = copy.deepcopy(template).eval()
        if [ly.name for ly in _layers(model)] != [ly.name for ly in self.layers]:
            raise NallnError("bake: the template's architecture differs from this network")
        for ly in self.layers:
            w, b = self._wb(ly)
            mod = model.get_submodule(ly.weight)
            mod.weight.copy_(w.detach().to(mod.weight.dtype))
            if ly.bn is None:
                mod.bias.copy_(b.detach().to(mod.bias.dtype))
                continue
            if mod.bias is not None:
                mod.bias.zero_()
            bn = model.get_submodule(ly.bn)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # (var + eps) == 1 in float32: BN is identity
            bn.weight.fill_(1.0)
            bn.bias.copy_(b.detach().to(bn.bias.dtype))
        for name, m in se_blocks(model).items():
            gate = self.se[naming.gated_stage(name)]
            if isinstance(gate, OnchipSE):  # the float values of the gate's integers
                m.se.load_state_dict(gate.on_grid_state())
            else:
                m.se.load_state_dict(gate.state_dict())
        return model
