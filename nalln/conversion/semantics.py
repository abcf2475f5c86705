"""The semantic choices for a NIR graph from another tool: reset rule, spikes per step, a
membrane floor, dt.

NIR 1.0.8 resets to ``v_reset``, sends one spike per step, has no floor on the membrane and
records no time step. Producers differ (snnTorch subtracts by default; Sinabs sends several
spikes per step, subtracts and may clip the membrane at ``min_v_mem``; Norse and snnTorch write
no ``dt``) and most record none of it. So every choice is explicit: read from a node's metadata
(``reset``, ``spikes``, ``v_min``, ``dt``) where the producer records it, otherwise from the
user's flags (``--reset``, ``--spikes``, ``--v-min``, ``--dt``), otherwise NIR's default; a
flag that contradicts what a node records is one error line, never a silent pick. The rules
themselves are :mod:`nalln.ir.semantics`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import nir

from nalln.errors import NallnError
from nalln.ir.semantics import ResetRule, SpikeMode

RESET_NAMES: dict[str, ResetRule] = {
    "zero": ResetRule.ZERO,
    "reset_to_zero": ResetRule.ZERO,
    "to_zero": ResetRule.ZERO,
    "subtract": ResetRule.SUBTRACT,
    "subtraction": ResetRule.SUBTRACT,
    "subtract-undecayed": ResetRule.SUBTRACT_UNDECAYED,
}
RESETTING = (nir.LIF, nir.IF, nir.CubaLIF)  # neurons with a reset (Threshold has none)
TIMED = (nir.LIF, nir.CubaLIF, nir.LI)  # nodes whose time constants need dt


@dataclass(frozen=True)
class Choices:
    """The user's flags; ``None``: what the graph records, else NIR's default."""

    reset: ResetRule | None = None
    spikes: SpikeMode | None = None
    dt: float | None = None
    v_min: float | None = None  # the membrane floor: v <- max(v, v_min) after the reset

    @classmethod
    def parse(
        cls,
        reset: str | None = None,
        spikes: str | None = None,
        dt: float | None = None,
        v_min: float | None = None,
    ) -> Choices:
        """The flags' values, checked (one line naming the allowed values)."""
        try:
            rule = None if reset is None else ResetRule(reset)
        except ValueError:
            names = ", ".join(r.value for r in ResetRule)
            raise NallnError(f"unknown --reset {reset!r}; use one of {names}") from None
        try:
            mode = None if spikes is None else SpikeMode(spikes)
        except ValueError:
            names = ", ".join(m.value for m in SpikeMode)
            raise NallnError(f"unknown --spikes {spikes!r}; use one of {names}") from None
        if dt is not None and not (math.isfinite(dt) and dt > 0):
            raise NallnError(f"--dt must be a positive number of seconds, got {dt!r}")
        if v_min is not None and not math.isfinite(v_min):
            raise NallnError(f"--v-min must be a finite number, got {v_min!r}")
        return cls(
            rule, mode, None if dt is None else float(dt), None if v_min is None else float(v_min)
        )

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.reset, self.spikes, self.dt, self.v_min))


def _meta(node: nir.NIRNode) -> dict[str, Any]:
    from nalln.conversion.nir_io import node_meta  # nir_io imports nothing from here

    return node_meta(node)


def node_semantics(node: nir.NIRNode, name: str) -> tuple[ResetRule, SpikeMode]:
    """The reset rule and spike mode a neuron node records (metadata ``reset``, ``spikes``),
    else NIR's (zero, single)."""
    kind = type(node).__name__
    meta = _meta(node)
    rule = RESET_NAMES.get(str(meta.get("reset", "zero")))
    if rule is None:
        names = ", ".join(RESET_NAMES)
        raise NallnError(
            f"{kind} node {name!r} records reset {meta['reset']!r}, which nalln does not know "
            f"(known: {names})"
        )
    try:
        mode = SpikeMode(str(meta.get("spikes", "single")))
    except ValueError:
        raise NallnError(
            f"{kind} node {name!r} records spikes {meta['spikes']!r}; nalln knows single and "
            "multi"
        ) from None
    return rule, mode


def node_floor(node: nir.NIRNode, name: str) -> float | None:
    """The membrane floor a neuron node records (metadata ``v_min``), else none (NIR)."""
    value = _meta(node).get("v_min")
    if value is None:
        return None
    try:
        floor = float(value)
    except (TypeError, ValueError):
        floor = math.nan
    if not math.isfinite(floor):
        raise NallnError(
            f"{type(node).__name__} node {name!r} records v_min {value!r}; it must be a number"
        )
    return floor


def _contradiction(who: str, what: str, recorded: Any, flag: str, given: Any) -> NallnError:
    return NallnError(
        f"{who} records {what} {recorded} but {flag} {given} was given; the graph's own record "
        "wins: drop the flag"
    )


def _check(graphs: list[nir.NIRGraph], info: dict[str, Any], choices: Choices) -> None:
    """Flags no node can take or that contradict what the graph records: one line each."""
    nodes = [(k, n) for g in graphs for k, n in g.nodes.items()]
    resetting = [(k, n) for k, n in nodes if isinstance(n, RESETTING)]
    given = (("--reset", choices.reset), ("--spikes", choices.spikes), ("--v-min", choices.v_min))
    neuron_flags = [f for f, v in given if v is not None]
    if neuron_flags and not resetting:
        flag = neuron_flags[0]
        raise NallnError(
            f"{flag} applies to LIF, IF and CubaLIF nodes, and the graph has none (only "
            "stateless Threshold neurons, or no neuron at all)"
        )
    for k, n in resetting:
        rule, mode = node_semantics(n, k)  # also: unknown recorded names
        meta, who = _meta(n), f"{type(n).__name__} node {k!r}"
        if choices.reset is not None and "reset" in meta and rule is not choices.reset:
            raise _contradiction(who, "reset", repr(rule.value), "--reset", choices.reset.value)
        if choices.spikes is not None and "spikes" in meta and mode is not choices.spikes:
            raise _contradiction(who, "spikes", repr(mode.value), "--spikes", choices.spikes.value)
        floor = node_floor(n, k)
        if choices.v_min is not None and floor is not None and floor != choices.v_min:
            raise _contradiction(who, "v_min", f"{floor:g}", "--v-min", f"{choices.v_min:g}")
    if choices.dt is None:
        return
    recorded = [("the graph", info["dt"])] if "dt" in info else []
    recorded += [(f"node {k!r}", _meta(n)["dt"]) for k, n in nodes if "dt" in _meta(n)]
    for who, dt in recorded:
        if not math.isclose(float(dt), choices.dt, rel_tol=1e-9):
            raise _contradiction(who, "dt", f"{float(dt):g} s", "--dt", f"{choices.dt:g}")


def record_choices(artefact, choices: Choices):
    """``artefact`` (a :class:`~nalln.conversion.nir_io.Artefact`, as just read) with the
    user's choices written into the metadata of the nodes that record none, so that lowering,
    every back-end and a re-written graph (``convert``) read them from one place; checked
    first (:func:`_check`)."""
    if not choices.given:
        return artefact
    _check(artefact.segments, artefact.info, choices)
    for graph in artefact.segments:
        for node in graph.nodes.values():
            add: dict[str, Any] = {}
            if isinstance(node, RESETTING):
                if choices.reset is not None:
                    add["reset"] = choices.reset.value
                if choices.spikes is not None:
                    add["spikes"] = choices.spikes.value
                if choices.v_min is not None:
                    add["v_min"] = choices.v_min
            if choices.dt is not None and isinstance(node, TIMED):
                add["dt"] = choices.dt
            if add:
                node.metadata = {**add, **(getattr(node, "metadata", None) or {})}
    info = dict(artefact.info)
    if choices.dt is not None:
        info["dt"] = choices.dt
    return dataclasses.replace(artefact, info=info)
