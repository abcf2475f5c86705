"""Assembling evaluation results into JSON and Markdown, with provenance on every number."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nalln.evaluation.bootstrap import BootstrapSpec
from nalln.evaluation.metrics import PER_CLASS_METRICS
from nalln.provenance import SYNTHETIC_DATA_NOTE, describe, notes, provenance_fields

SYNTHETIC_NOTE = SYNTHETIC_DATA_NOTE  # the name other modules import


def _ci(pair: tuple[np.ndarray, np.ndarray], i: int | None = None) -> list[float]:
    lo, hi = pair
    return [float(lo if i is None else lo[i]), float(hi if i is None else hi[i])]


def build_metrics_json(
    point: dict[str, np.ndarray],
    ci: dict[str, tuple[np.ndarray, np.ndarray]],
    cm: np.ndarray,
    class_names: Sequence[str],
    spec: BootstrapSpec,
    source: dict[str, Any],
    synthetic: bool,
    loss: float | None = None,
    synthetic_model: bool | None = None,
) -> dict[str, Any]:
    """``synthetic``: the evaluated images are synthetic; ``synthetic_model``: the model was
    trained on synthetic images (None: the same as ``synthetic``)."""
    model = synthetic if synthetic_model is None else synthetic_model
    out: dict[str, Any] = {
        **provenance_fields(synthetic, model),
        "n": int(cm.sum()),
        "accuracy": float(point["accuracy"]),
        "accuracy_ci": _ci(ci["accuracy"]),
        "loss": loss,
    }
    for avg in ("macro", "weighted"):
        out[avg] = {
            m: {"value": float(point[f"{avg}_{m}"]), "ci": _ci(ci[f"{avg}_{m}"])}
            for m in PER_CLASS_METRICS
        }
    out["per_class"] = {
        c: {
            **{m: float(point[m][i]) for m in PER_CLASS_METRICS},
            **{f"{m}_ci": _ci(ci[m], i) for m in PER_CLASS_METRICS},
            "support": int(point["support"][i]),
        }
        for i, c in enumerate(class_names)
    }
    out["confusion_matrix"] = {"labels": list(class_names), "rows_true_cols_predicted": cm.tolist()}
    out["bootstrap"] = {
        "method": "percentile",
        "n_resamples": spec.n_resamples,
        "confidence": spec.confidence,
        "seed": spec.seed,
    }
    out["source"] = source
    out["provenance"] = (
        f"measured: predictions of the checkpoint on {int(cm.sum())} images; intervals: "
        f"percentile bootstrap over images ({spec.n_resamples:,} resamples, seed {spec.seed}); "
        "undefined ratios count as 0"
    )
    return out


def metrics_markdown(m: dict[str, Any], title: str) -> str:
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    ci = lambda c: f"[{c[0]:.4f}, {c[1]:.4f}]"  # noqa: E731
    lines = [f"# {title}", ""]
    data_synth = bool(m.get("synthetic"))
    model_synth = bool(m.get("synthetic_model", data_synth))
    lines += [f"> **{note}**\n" for note in notes(data_synth, model_synth)]
    data_says, model_says = describe(data_synth, model_synth)
    src = m.get("source", {})
    lines += [
        f"- checkpoint: `{src.get('checkpoint', '?')}` (model {model_says})",
        f"- data: `{src.get('data', '?')}` ({src.get('subset', '?')}, {m['n']} images; "
        f"{data_says})",
        f"- accuracy: **{pct(m['accuracy'])}** (95% CI {ci(m['accuracy_ci'])})",
    ]
    if m.get("loss") is not None:
        lines.append(f"- cross-entropy loss: {m['loss']:.4f}")
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for c, r in m["per_class"].items():
        lines.append(
            f"| {c} | {r['precision']:.4f} {ci(r['precision_ci'])} | {r['recall']:.4f} "
            f"{ci(r['recall_ci'])} | {r['f1']:.4f} {ci(r['f1_ci'])} | {r['support']} |"
        )
    for avg in ("macro", "weighted"):
        a = m[avg]
        lines.append(
            f"| *{avg} avg* | {a['precision']['value']:.4f} {ci(a['precision']['ci'])} | "
            f"{a['recall']['value']:.4f} {ci(a['recall']['ci'])} | {a['f1']['value']:.4f} "
            f"{ci(a['f1']['ci'])} | {m['n']} |"
        )
    labels = m["confusion_matrix"]["labels"]
    lines += [
        "",
        "Confusion matrix (rows true, columns predicted):",
        "",
        "| true \\ pred | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for c, row in zip(labels, m["confusion_matrix"]["rows_true_cols_predicted"], strict=True):
        lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", f"_{m['provenance']}_", ""]
    return "\n".join(lines)
