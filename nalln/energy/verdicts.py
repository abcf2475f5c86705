"""SNN vs ANN verdicts under matched cost models, as ranges.

A verdict compares two :class:`Range` s priced under ONE cost model: both sides arithmetic only,
both sides paying memory (a chip's per-event figure includes its memory, so a chip is only
compared with an ANN that pays memory too), or both sides dense at ONE precision. The SNN is
cheaper when even its high end is below the ANN's low end, dearer when its low end is above the
ANN's high end, and undecided when the ranges overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nalln.energy.cost_models import BreakEven, Estimate, break_even
from nalln.energy.modes import CostModel


@dataclass(frozen=True)
class Range:
    """Energy per inference between two modelled ends (pJ); ``high_pj`` None = lower bound only."""

    low_pj: float
    high_pj: float | None
    low_label: str
    high_label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "low_uj": self.low_pj / 1e6,
            "high_uj": None if self.high_pj is None else self.high_pj / 1e6,
            "low": self.low_label,
            "high": self.high_label,
        }


@dataclass(frozen=True)
class Verdict:
    """One matched comparison: the SNN on ``target`` vs the ANN described by ``ann_label``."""

    target: str
    model: CostModel
    snn: Range
    ann: Range
    ann_label: str
    proxy: str | None = None
    precision: str | None = None
    be_pessimistic: BreakEven | None = None  # SNN high vs ANN low
    be_optimistic: BreakEven | None = None  # SNN low vs ANN high
    events_per_weight: float | None = None  # measured synaptic events per nonzero weight
    host_share: tuple[float, float] | None = None  # fraction of the SNN's energy off-chip
    notes: tuple[str, ...] = ()

    @property
    def lower_bounds_only(self) -> bool:
        return self.snn.high_pj is None or self.ann.high_pj is None

    @property
    def ratio_low(self) -> float:
        """SNN / ANN at the end most favourable to the SNN."""
        if self.lower_bounds_only:
            return _ratio(self.snn.low_pj, self.ann.low_pj)
        return _ratio(self.snn.low_pj, float(self.ann.high_pj))

    @property
    def ratio_high(self) -> float:
        """SNN / ANN at the end least favourable to the SNN."""
        if self.lower_bounds_only:
            return _ratio(self.snn.low_pj, self.ann.low_pj)
        return _ratio(float(self.snn.high_pj), self.ann.low_pj)

    @property
    def ratio_best(self) -> float:
        """SNN / ANN with both sides at their cheap end (best dataflow, zero-skip, low chip
        costs): the comparison against the ANN at its best reasonable dataflow."""
        return _ratio(self.snn.low_pj, self.ann.low_pj)

    @property
    def ratio_dear(self) -> float | None:
        """SNN / ANN with both sides at their dear end (no reuse, dense, high chip costs)."""
        if self.lower_bounds_only:
            return None
        return _ratio(float(self.snn.high_pj), float(self.ann.high_pj))

    @property
    def outcome(self) -> str:
        if self.ratio_high < 1:
            return "SNN cheaper"
        if self.ratio_low > 1:
            return "ANN cheaper"
        return "undecided"

    def break_even_rates(self) -> tuple[float | None, float | None]:
        """(pessimistic, optimistic) break-even firing rates; None: no spike-dependent cost."""
        pes = self.be_pessimistic.rate if self.be_pessimistic else None
        opt = self.be_optimistic.rate if self.be_optimistic else None
        return pes, opt

    def break_even_events_per_weight(self) -> tuple[float | None, float | None]:
        """The break-evens in Dampfhoffer et al.'s convention: synaptic events per nonzero
        weight per inference. Uniform scaling moves both conventions by the same factor."""
        if self.events_per_weight is None:
            return None, None
        out = []
        for be in (self.be_pessimistic, self.be_optimistic):
            s = be.scale if be is not None else None
            out.append(None if s is None else s * self.events_per_weight)
        return out[0], out[1]

    def verdict(self) -> str:
        lo, hi = self.ratio_low, self.ratio_high
        span = f"{lo:.3g}x" if math.isclose(lo, hi, rel_tol=1e-9) else f"{lo:.3g}-{hi:.3g}x"
        head = f"{self.outcome}: SNN / ANN = {span}"
        if self.lower_bounds_only:
            head += " (ratio of lower bounds)"
        else:
            head += (
                f" over the whole range; {self.ratio_best:.3g}x with both sides at their cheap "
                f"end (the ANN at its best dataflow), {self.ratio_dear:.3g}x both at their dear end"
            )
        pes, opt = self.break_even_rates()
        if pes is None and opt is None:
            return head + "; cost independent of spikes: no break-even rate"
        if not opt and self.outcome != "SNN cheaper":
            return head + (
                "; its activity-independent part alone exceeds the ANN even at the SNN's "
                "cheap end: no firing rate makes it cheaper"
            )
        parts = [f"{r:.4g}" if r is not None else "-" for r in (pes, opt)]
        return head + (
            f"; break-even firing rate {parts[0]} (pessimistic) to {parts[1]} (optimistic)"
        )

    def to_dict(self) -> dict[str, Any]:
        pes, opt = self.break_even_rates()
        epw = self.break_even_events_per_weight()
        return {
            "target": self.target,
            "model": str(self.model),
            "proxy": self.proxy,
            "precision": self.precision,
            "baseline": self.ann_label,
            "snn": self.snn.to_dict(),
            "ann": self.ann.to_dict(),
            "snn_uj_low": self.snn.low_pj / 1e6,
            "snn_uj_high": None if self.snn.high_pj is None else self.snn.high_pj / 1e6,
            "baseline_uj_low": self.ann.low_pj / 1e6,
            "baseline_uj_high": None if self.ann.high_pj is None else self.ann.high_pj / 1e6,
            "ratio_low": self.ratio_low,
            "ratio_high": self.ratio_high,
            "ratio_best": self.ratio_best,
            "ratio_dear": self.ratio_dear,
            "lower_bounds_only": self.lower_bounds_only,
            "outcome": self.outcome,
            "snn_wins": self.outcome == "SNN cheaper",
            "break_even_rate_pessimistic": pes,
            "break_even_rate_optimistic": opt,
            "events_per_weight": self.events_per_weight,
            "break_even_events_per_weight_pessimistic": epw[0],
            "break_even_events_per_weight_optimistic": epw[1],
            "host_share_low": None if self.host_share is None else self.host_share[0],
            "host_share_high": None if self.host_share is None else self.host_share[1],
            "verdict": self.verdict(),
            "notes": list(self.notes),
        }


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


def _range(low: Estimate, high: Estimate | None, low_label: str, high_label: str = "") -> Range:
    return Range(low.total_pj, None if high is None else high.total_pj, low_label, high_label)


def matched(
    target: str,
    model: CostModel,
    snn_low: Estimate,
    snn_high: Estimate | None,
    ann_low: Estimate,
    ann_high: Estimate | None,
    ann_label: str,
    rate: float,
    labels: tuple[str, str, str, str],
    proxy: str | None = None,
    precision: str | None = None,
    notes: tuple[str, ...] = (),
    events_per_weight: float | None = None,
) -> Verdict:
    """A verdict from the estimates at both ends; ``labels`` name (snn low, snn high, ann low,
    ann high). Break-evens pair the SNN's high end with the ANN's low end and vice versa."""
    pes = break_even(snn_high or snn_low, ann_low, rate)
    opt = break_even(snn_low, ann_high or ann_low, rate)
    ends = [e for e in (snn_low, snn_high) if e is not None]
    shares = [e.off_chip_pj() / e.total_pj for e in ends if e.total_pj]
    off_chip = any(e.off_chip_pj() for e in ends)
    return Verdict(
        target=target,
        model=model,
        snn=_range(snn_low, snn_high, labels[0], labels[1]),
        ann=_range(ann_low, ann_high, labels[2], labels[3]),
        ann_label=ann_label,
        proxy=proxy,
        precision=precision,
        be_pessimistic=pes,
        be_optimistic=opt,
        events_per_weight=events_per_weight,
        host_share=(min(shares), max(shares)) if off_chip and shares else None,
        notes=notes,
    )
