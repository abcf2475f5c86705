"""Where a network loses accuracy on Loihi's fixed point, in numbers.

Everything runs on :class:`~nalln.loihi.fake_quant.FakeQuantNet`, whose forward pass *is* the
chip's integer arithmetic (tau = 2, T <= 7; see :mod:`nalln.loihi.grid`), so each figure is
what the chip would do. On the test split of a run it measures:

* the chain of models: the trained model (dynamic SE), the start model (BatchNorm folded,
  static gates folded for ``--se static``), the same on the grid (post-training quantisation);
* **per-layer sensitivity**: only one layer (or only the input) on the grid, the rest float;
* **flip propagation**: per layer and time step, the fraction of spike decisions the
  all-quantised network shares with the float one;
* **per-channel resolution**: one weight scale per layer (Loihi holds one exponent per synapse
  group) gives a channel whose weights span less of the 8-bit range fewer levels; per layer the
  median and minimum of ``log2(max_c |w_int|)`` over output channels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from nalln.data.transforms import to_float
from nalln.deploy.finetune_fixed_point import (
    FinetuneConfig,
    grid_for,
    load_split_images,
    start_model,
)
from nalln.inference import predict_logits
from nalln.ir.se_mode import SEMode
from nalln.loihi.fake_quant import FakeQuantNet, quantise_weight_ste
from nalln.run_data import run_index
from nalln.runs import load_model


@torch.no_grad()
def _run(net: FakeQuantNet, x: torch.Tensor, batch: int = 64):
    logits, spikes = [], {}
    for i in range(0, len(x), batch):
        sp: dict[str, torch.Tensor] = {}
        logits.append(net.forward_steps(x[i : i + batch], sp).mean(0))
        for k, v in sp.items():
            spikes.setdefault(k, []).append(v)
    return torch.cat(logits), {k: torch.cat(v, 1) for k, v in spikes.items()}


def _acc(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).double().mean())


def channel_resolution(net: FakeQuantNet) -> dict[str, dict[str, float]]:
    """Per layer: median and minimum over output channels of log2(max |w_int|) (7 = the whole
    8-bit range; every bit less halves that channel's weight resolution)."""
    out = {}
    for ly in net.layers:
        g = net.grid.layer(ly.name)
        w = quantise_weight_ste(net.weights[ly.name].detach(), g, ly.pool) / ly.pool
        w_int = (w.double() * g.weight_scale).abs().reshape(w.shape[0], -1).amax(1)
        bits = torch.log2(w_int.clamp(min=1.0)).numpy()
        out[ly.name] = {
            "median_bits": float(np.median(bits)),
            "min_bits": float(bits.min()),
            "channels": int(w.shape[0]),
        }
    return out


@torch.no_grad()
def diagnose(
    run: str | Path,
    data: str | Path | None = None,
    *,
    se: SEMode | str = SEMode.STATIC,
    calibration: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """The numbers of the module docstring for ``run`` (a float run, before fine-tuning)."""
    cfg = FinetuneConfig(se=se, epochs=0, calibration=calibration)
    loaded = load_model(run)
    index = run_index(loaded, data)
    pre = loaded.preprocess
    calib = pre(to_float(load_split_images(loaded, index, "train", max(calibration, 256), 1)[0]))
    model, se_mode, se_info = start_model(loaded, cfg, calib[:256], lambda _m: None)
    grid, _ = grid_for(model, se_mode, calib[:calibration], progress)
    images, y = load_split_images(loaded, index, "test")
    x = torch.cat([pre(to_float(images[i : i + 64])) for i in range(0, len(images), 64)])
    net = FakeQuantNet(model, grid).eval()
    net.quantise = False
    float_logits, float_spikes = _run(net, x)
    net.quantise = True
    q_logits, q_spikes = _run(net, x)
    sensitivity = {}
    for name in tqdm(["input", *[ly.name for ly in net.layers]], disable=not progress):
        net.quantised = frozenset({name})
        logits, _ = _run(net, x)
        sensitivity[name] = {
            "accuracy": _acc(logits, y),
            "top1_agreement_vs_float": float(
                (logits.argmax(1) == float_logits.argmax(1)).double().mean()
            ),
        }
    net.quantised = None
    flips = {
        k: [float((q_spikes[k][t] == float_spikes[k][t]).double().mean()) for t in range(len(v))]
        for k, v in float_spikes.items()
    }
    original = predict_logits(loaded.model, pre, images)
    T = grid.num_steps
    return {
        "run": str(run),
        "se": se_info["se"],
        "se_mode": se_mode.value,
        "test_images": int(len(y)),
        "synthetic": loaded.synthetic,
        "accuracy": {
            "trained_model": _acc(original, y),
            "start_model_float": _acc(float_logits, y),
            "start_model_on_grid": _acc(q_logits, y),
        },
        "top1_agreement_on_grid_vs_start_float": float(
            (q_logits.argmax(1) == float_logits.argmax(1)).double().mean()
        ),
        "sensitivity_one_layer_on_grid": sensitivity,
        "spike_agreement_per_layer_and_step": flips,
        "channel_resolution": channel_resolution(net),
        "grid": {
            "num_steps": T,
            "threshold_offset": math.ldexp(1.0, -T),
            "input_scale": grid.input_scale,
            "layers": [
                {"name": g.name, "scale": g.scale, "vth": g.vth, "clip_factor": g.clip_factor}
                for g in grid.layers
            ],
        },
        "provenance": "measured on this machine: the fake-quantised network equals Loihi 2's "
        "integer arithmetic spike for spike (test_fake_quant_forward_equals_emulator)",
    }
