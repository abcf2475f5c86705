r"""``nalln quantize``: INT8 post-training quantisation of the weights, as a new run folder.

Every Conv2d and Linear weight is quantised per output channel, symmetrically, to int8:

.. math::
    s_c = \max_i |W_{c,i}| / 127, \qquad q_{c,i} = \mathrm{clip}(\mathrm{round}(W_{c,i}/s_c),
    -127, 127), \qquad \hat W_{c,i} = s_c\, q_{c,i}

(a channel of zeros gets :math:`s_c = 1`). Biases, BatchNorm parameters and statistics stay
float32 (they are a few hundred numbers). The checkpoint stores the int8 tensors and the scales
(``qscale/<name>``); :func:`nalln.checkpoint.load_checkpoint` dequantises on load, so
``evaluate``, ``predict``, ``profile`` and every analysis run the quantised model unchanged.
Activations, membrane potentials and arithmetic stay float32: this measures what int8 weight
storage costs in accuracy and saves in size, not an int8 kernel's speed.

The output is a normal run folder (config, split manifest, training curves copied from the
source) whose checkpoint metadata says ``quantized: int8``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nalln.analysis.common import accuracy_ci, eval_set
from nalln.checkpoint import save_checkpoint
from nalln.errors import NallnError
from nalln.inference import pick_device, predict_logits
from nalln.io import read_json, write_bytes, write_json, write_text
from nalln.runs import RunDir, load_model

SCHEME = "int8 symmetric per-output-channel weights (Conv2d, Linear); float32 elsewhere"
QMAX = 127


def quantize_tensor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q int8, scale float32 [out])`` with ``w ~ q * scale`` per output channel (dim 0)."""
    flat = w.detach().float().reshape(w.shape[0], -1)
    amax = flat.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))
    q = torch.round(flat / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
    return q.reshape(w.shape), scale


def dequantize_tensor(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.reshape(-1, *([1] * (q.dim() - 1)))


def quantizable(model: nn.Module, keep_float: Sequence[str] = ()) -> list[str]:
    """State-dict keys of the weights that are quantised (``keep_float``: module names left
    in float32, e.g. the stem)."""
    layers = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and m.weight is not None
    }
    unknown = [k for k in keep_float if k not in layers]
    if unknown:
        raise NallnError(
            f"--keep-float {', '.join(unknown)}: no such Conv2d/Linear layer; valid: "
            + ", ".join(layers)
        )
    return [f"{name}.weight" for name in layers if name not in keep_float]


def quantize_state_dict(
    state: dict[str, torch.Tensor], keys: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Quantise ``keys`` of ``state``; returns the new state, the scales and per-layer errors."""
    out = dict(state)
    scales: dict[str, torch.Tensor] = {}
    layers = []
    for k in keys:
        w = state[k].float()
        q, s = quantize_tensor(w)
        err = dequantize_tensor(q, s) - w
        out[k], scales[k] = q, s
        layers.append(
            {
                "weight": k,
                "shape": list(w.shape),
                "max_abs_error": float(err.abs().max()),
                "relative_rms_error": float(err.norm() / w.norm().clamp_min(1e-12)),
            }
        )
    return out, scales, layers


def _bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


@dataclass
class QuantizeResult:
    data: dict[str, Any]
    out: Path
    files: dict[str, Path]


def _copy_run_files(src: RunDir, dst: RunDir, note: dict[str, Any]) -> None:
    if src.config.is_file():
        cfg = read_json(src.config)
        cfg["quantization"] = note
        write_json(dst.config, cfg)
    for f in (src.splits, src.metrics_csv, src.curves_png, src.path / "train_summary.json"):
        if f.is_file():
            write_bytes(dst.path / f.name, f.read_bytes())


def quantize_run(
    run: str | Path,
    out: str | Path | None = None,
    *,
    checkpoint: str = "best",
    data: str | Path | None = None,
    split: str = "test",
    compare: bool = True,
    keep_float: Sequence[str] = (),
    sensitivity: bool = False,
    n_resamples: int = 10_000,
    device: str = "cpu",
    progress: bool = False,
) -> QuantizeResult:
    dev = pick_device(device)
    fp32 = load_model(run, checkpoint, dev)
    if fp32.run_meta.quantized:
        raise NallnError(f"{run} is already quantised ({fp32.run_meta.quantized})")
    src_path = fp32.run.path if fp32.run is not None else Path(run).parent
    out_dir = Path(out) if out else src_path.parent / f"{src_path.name}-int8"
    dst = RunDir(out_dir)
    if dst.exists():
        raise NallnError(f"{out_dir} already holds a checkpoint; remove it or pass another --out")
    if compare and fp32.run is None:
        raise NallnError("the accuracy comparison needs the run folder; pass RUN or --no-compare")

    state = {k: v.detach().cpu() for k, v in fp32.model.state_dict().items()}
    keys = quantizable(fp32.model, keep_float)
    qstate, scales, layers = quantize_state_dict(state, keys)
    q = _Quantised(state, qstate, scales, keys, layers, list(keep_float))
    # the images are found before anything is written; a failure later removes the new folder
    evalset = eval_set(fp32, data, split, progress=progress) if compare or sensitivity else None
    created = not out_dir.exists()
    try:
        result = _write_and_measure(fp32, dst, q, str(run))
        int8 = load_model(out_dir, "best", dev)  # through the ordinary load path
        if evalset is not None:
            images = evalset.images(fp32.image_size)
            lf = predict_logits(fp32.model, fp32.preprocess, images, 64, dev)
            if compare:
                result["accuracy"] = _compare(fp32, int8, evalset, images, lf, n_resamples, dev)
            if sensitivity:
                result["sensitivity"] = _sensitivity(fp32, q, images, lf, evalset.labels, dev)
        files = {
            "checkpoint": dst.best,
            "quantization.json": write_json(out_dir / "quantization.json", result),
            "quantization.md": write_text(out_dir / "quantization.md", _markdown(result)),
        }
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return QuantizeResult(result, out_dir, files)


@dataclass
class _Quantised:
    """The float32 source state and its quantised form."""

    state: dict[str, torch.Tensor]
    qstate: dict[str, torch.Tensor]
    scales: dict[str, torch.Tensor]
    keys: list[str]
    layers: list[dict[str, Any]]
    kept_float: list[str]

    def note(self, source: str) -> dict[str, Any]:
        return {
            "scheme": SCHEME,
            "source_checkpoint": source,
            "quantized_tensors": len(self.keys),
            "kept_float": self.kept_float,
            "quantized_weights": int(sum(self.state[k].numel() for k in self.keys)),
        }


def _write_and_measure(fp32, dst: RunDir, q: _Quantised, run: str) -> dict[str, Any]:
    """Write the quantised run folder (checkpoint, copied run files); sizes and errors."""
    note = q.note(str(fp32.checkpoint.path))
    meta = {**fp32.checkpoint.meta, "quantized": "int8", "quantization": note, "kind": "best"}
    save_checkpoint(dst.best, q.qstate, meta, scales=q.scales)
    if fp32.run is not None:
        _copy_run_files(fp32.run, dst, note)
    fp32_bytes = _bytes(q.state)
    int8_bytes = _bytes(q.qstate) + sum(s.numel() * 4 for s in q.scales.values())
    return {
        "synthetic": fp32.synthetic,
        "run": run,
        "quantized_run": str(dst.path),
        "scheme": SCHEME,
        "kept_float": q.kept_float,
        "size": {
            "state_fp32_bytes": fp32_bytes,
            "state_int8_bytes": int8_bytes,
            "state_ratio": int8_bytes / fp32_bytes,
            "file_fp32_bytes": fp32.checkpoint.path.stat().st_size,
            "file_int8_bytes": dst.best.stat().st_size,
            "provenance": "state bytes counted (numel x element size, scales included); file "
            "bytes measured on disk (safetensors with metadata)",
        },
        "weights": {
            "tensors": len(q.keys),
            "values": note["quantized_weights"],
            "worst_relative_rms_error": max(
                (x["relative_rms_error"] for x in q.layers), default=0.0
            ),
            "layers": q.layers,
        },
    }


def _compare(fp32, int8, evalset, images, lf, n_resamples, dev) -> dict[str, Any]:
    y = evalset.labels
    lq = predict_logits(int8.model, int8.preprocess, images, 64, dev)
    cf = (lf.argmax(1).numpy() == y).astype(np.int64)
    cq = (lq.argmax(1).numpy() == y).astype(np.int64)
    diff = cq - cf
    d_lo, d_hi = accuracy_ci(diff, n_resamples)  # paired: the mean of per-image differences
    return {
        "subset": evalset.subset,
        "n": len(y),
        "synthetic": evalset.synthetic,
        "fp32": {"accuracy": float(cf.mean()), "ci": list(accuracy_ci(cf, n_resamples))},
        "int8": {"accuracy": float(cq.mean()), "ci": list(accuracy_ci(cq, n_resamples))},
        "change": float(diff.mean()),
        "change_ci": [d_lo, d_hi],
        "prediction_agreement": float((lf.argmax(1) == lq.argmax(1)).float().mean()),
        "max_abs_logit_difference": float((lf - lq).abs().max()),
        "provenance": "measured on the same images; CIs percentile bootstrap (paired for the "
        "change)",
    }


def _sensitivity(fp32, q: _Quantised, images, lf, y, dev) -> list[dict[str, Any]]:
    """Each weight quantised alone (the rest float32): which layers move the predictions."""
    import copy

    model = copy.deepcopy(fp32.model)
    rows = []
    for k in q.keys:
        trial = dict(q.state)
        trial[k] = dequantize_tensor(q.qstate[k], q.scales[k])
        model.load_state_dict(trial)
        lt = predict_logits(model, fp32.preprocess, images, 64, dev)
        rows.append(
            {
                "weight": k,
                "accuracy": float((lt.argmax(1).numpy() == y).mean()),
                "prediction_agreement": float((lt.argmax(1) == lf.argmax(1)).float().mean()),
                "max_abs_logit_difference": float((lt - lf).abs().max()),
            }
        )
    return rows


def _markdown(r: dict[str, Any]) -> str:
    s = r["size"]
    lines = [f"# INT8 weight quantisation of {r['run']}", ""]
    if r["synthetic"]:
        lines += ["**SYNTHETIC DATA: pipeline check only, not clinical evidence.**", ""]
    lines += [
        f"Scheme: {r['scheme']}. Quantised run: `{r['quantized_run']}`.",
        "",
        "| | FP32 | INT8 | ratio |",
        "|---|---:|---:|---:|",
        f"| weights + buffers, bytes (counted) | {s['state_fp32_bytes']:,} | "
        f"{s['state_int8_bytes']:,} | {s['state_ratio']:.3f} |",
        f"| checkpoint file, bytes (measured) | {s['file_fp32_bytes']:,} | "
        f"{s['file_int8_bytes']:,} | {s['file_int8_bytes'] / s['file_fp32_bytes']:.3f} |",
    ]
    acc = r.get("accuracy")
    if acc:
        f, q = acc["fp32"], acc["int8"]
        lines += [
            f"| accuracy on {acc['subset']} (n={acc['n']}, measured) | {f['accuracy']:.4f} "
            f"({f['ci'][0]:.4f}-{f['ci'][1]:.4f}) | {q['accuracy']:.4f} "
            f"({q['ci'][0]:.4f}-{q['ci'][1]:.4f}) | |",
            "",
            f"Accuracy change {acc['change']:+.4f} (paired 95% CI {acc['change_ci'][0]:+.4f} to "
            f"{acc['change_ci'][1]:+.4f}); the two models agree on "
            f"{acc['prediction_agreement']:.1%} of the predictions; largest logit difference "
            f"{acc['max_abs_logit_difference']:.4g}.",
        ]
    w = r["weights"]
    lines += [
        "",
        f"{w['tensors']} weight tensors ({w['values']:,} values) quantised; worst relative RMS "
        f"weight error {w['worst_relative_rms_error']:.4f}. Activations and arithmetic stay "
        "float32 (weights are dequantised at load)."
        + (f" Kept in float32: {', '.join(r['kept_float'])}." if r.get("kept_float") else ""),
    ]
    sens = r.get("sensitivity")
    if sens:
        lines += [
            "",
            "## Sensitivity: one weight quantised at a time (measured)",
            "",
            "| weight | accuracy | agreement with FP32 | max logit difference |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {x['weight']} | {x['accuracy']:.4f} | {x['prediction_agreement']:.3f} | "
            f"{x['max_abs_logit_difference']:.4g} |"
            for x in sens
        ]
    return "\n".join(lines) + "\n"
