"""How a network's Squeeze-and-Excitation gates are deployed: one type for the CLI, the
exporter, checkpoints and fixed-point grids."""

from __future__ import annotations

from enum import StrEnum

from nalln.errors import NallnError


class SEMode(StrEnum):
    """``NONE``: the network has no SE gate (no SE, or gates already baked into the weights).
    ``STATIC``: each gate is a calibrated per-channel constant folded into the pointwise conv
    (one NIR-native graph). ``HYBRID``: the gates run as a side-car between NIR segments.
    ``ONCHIP``: the gates run on neuro-cores with integer semantics (fixed point only; the graph
    is cut at each gate as for hybrid, ``nalln.loihi.onchip_se`` computes them)."""

    NONE = "none"
    STATIC = "static"
    HYBRID = "hybrid"
    ONCHIP = "onchip"

    @property
    def side_car(self) -> bool:
        """Whether the gates run off the neuro-cores, between graph segments."""
        return self is SEMode.HYBRID

    @property
    def gated(self) -> bool:
        """Whether the plan keeps a gate stage per SE block (hybrid side-car or on-chip gate)."""
        return self in (SEMode.HYBRID, SEMode.ONCHIP)

    @classmethod
    def deployable(cls) -> tuple[SEMode, ...]:
        """The modes a user chooses for a model that has SE blocks."""
        return (cls.STATIC, cls.HYBRID)

    @classmethod
    def parse(cls, value: str | SEMode, allowed: tuple[SEMode, ...] | None = None) -> SEMode:
        """``value`` as a mode, or one line naming the modes that are allowed."""
        allowed = allowed or tuple(cls)
        try:
            mode = cls(value)
        except ValueError:
            mode = None
        if mode not in allowed:
            names = ", ".join(m.value for m in allowed)
            raise NallnError(f"unknown SE mode {value!r}; use one of {names}")
        return mode
