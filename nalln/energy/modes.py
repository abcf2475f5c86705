"""The modes of the energy models as types: cost model, precision, dataflow, bound.

They are ``StrEnum`` so they compare equal to the strings written in JSON, CSV and on the command
line (``CostModel("ops+memory") is CostModel.OPS_MEMORY``), while code that branches on a mode
names a member instead of repeating a string literal.
"""

from __future__ import annotations

from enum import StrEnum


class CostModel(StrEnum):
    """What an estimate charges."""

    OPS = "ops"  # arithmetic only (what most SNN papers report)
    OPS_MEMORY = "ops+memory"  # arithmetic + memory accesses / chip per-event figures
    DENSE = "dense"  # GPU / CPU: FLOPs x TDP / peak (lower bound)

    @property
    def title(self) -> str:
        return {
            CostModel.OPS: "operations only (SOP x E_AC + MAC x E_MAC)",
            CostModel.OPS_MEMORY: (
                "operations + memory accesses (Lemaire et al. 2022 / per-event chip figures)"
            ),
            CostModel.DENSE: "dense FLOPs x TDP/peak (GPU/CPU lower bound)",
        }[self]

    @property
    def pays_memory(self) -> bool:
        """Does an estimate under this model charge memory traffic? A chip's per-event figure
        includes its memory, so it may only be compared under a model where the ANN pays too."""
        return self is CostModel.OPS_MEMORY


class Precision(StrEnum):
    """Arithmetic precision of dense execution (GPU / CPU) or of an ASIC baseline."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT4 = "int4"

    @property
    def dense_key(self) -> str | None:
        """The target constant holding pJ per FLOP / op at this precision (None: no such key)."""
        return {
            Precision.FP32: "pj_per_flop_fp32",
            Precision.FP16: "pj_per_flop_fp16",
            Precision.INT8: "pj_per_op_int8",
        }.get(self)


class Dataflow(StrEnum):
    """How an ASIC moves the operands of an analog (MAC) layer between SRAM and the datapath."""

    NO_REUSE = "no-reuse"  # Lemaire et al. 2022: input and weight read on every MAC
    REUSE = "reuse"  # Eyeriss-style: each weight / input read once per layer when buffers fit


class Bound(StrEnum):
    """Which end of a modelled range an estimate is."""

    LOW = "low"
    HIGH = "high"


MODELS: tuple[CostModel, ...] = tuple(CostModel)
DENSE_PRECISIONS: tuple[Precision, ...] = (Precision.FP32, Precision.FP16, Precision.INT8)
