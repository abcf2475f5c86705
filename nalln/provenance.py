"""Where a result came from: two facts, never merged into one.

``synthetic_data``: the images measured were drawn by ``nalln data synth``.
``synthetic_model``: the model learnt from such images. A run trained on synthetic data and
evaluated on real images gives real measurements of a toy model: its report must say so, and
must not call the real images synthetic (issue 15, finding 3). Either fact makes a result a
pipeline check, not clinical evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SYNTHETIC_DATA_NOTE = (
    "SYNTHETIC DATA: these figures come from images drawn by `nalln data synth`; they check "
    "the pipeline and say nothing about clinical performance."
)
SYNTHETIC_MODEL_NOTE = (
    "MODEL TRAINED ON SYNTHETIC DATA: the images measured here are not marked synthetic, but "
    "the model learnt from images drawn by `nalln data synth`; the figures check the pipeline "
    "and say nothing about clinical performance."
)
DATA_TAG = "SYNTHETIC DATA"
MODEL_TAG = "MODEL TRAINED ON SYNTHETIC DATA"


def provenance_fields(synthetic_data: bool, synthetic_model: bool) -> dict[str, Any]:
    """The JSON fields of a result: ``synthetic`` is about the data (as it always was)."""
    out: dict[str, Any] = {
        "synthetic": bool(synthetic_data),
        "synthetic_model": bool(synthetic_model),
    }
    if synthetic_data:
        out["data_note"] = SYNTHETIC_DATA_NOTE
    if synthetic_model:
        out["model_note"] = "the model was trained on SYNTHETIC images drawn by `nalln data synth`"
    return out


def notes(synthetic_data: bool, synthetic_model: bool) -> list[str]:
    """The warning a reader must see first (none for a real model on real data)."""
    if synthetic_data:
        return [SYNTHETIC_DATA_NOTE]
    return [SYNTHETIC_MODEL_NOTE] if synthetic_model else []


def plot_tag(synthetic_data: bool, synthetic_model: bool = False) -> str | None:
    """The red tag of a figure (None: no tag)."""
    if synthetic_data:
        return DATA_TAG
    return MODEL_TAG if synthetic_model else None


def describe(synthetic_data: bool, synthetic_model: bool) -> tuple[str, str]:
    """One phrase each for the data and the model, for tables and Markdown."""
    data = "SYNTHETIC (drawn by `nalln data synth`)" if synthetic_data else "not marked synthetic"
    model = (
        "trained on SYNTHETIC data" if synthetic_model else "trained on data not marked synthetic"
    )
    return data, model


@dataclass(frozen=True)
class Origin:
    """Both facts, for code that takes one ``synthetic`` flag (figure helpers): true when either
    holds, and the tag says which."""

    data: bool
    model: bool

    def __bool__(self) -> bool:
        return self.data or self.model

    @property
    def tag(self) -> str | None:
        return plot_tag(self.data, self.model)
