r"""What a neuromorphic chip costs beyond its per-event figures, at a LOW and a HIGH bound.

* **Static power x latency**: ``p_static x T x t_step`` per chip (cited in the target file);
  LOW charges one board, HIGH every chip the placement needs.
* **Routing hops**: the placement of :func:`nalln.energy.chip_fit.fit_network` puts each layer
  on consecutive cores of a mesh ``ceil(sqrt(cores_per_chip))`` cores wide. A spike of a layer
  travels to the cores of the next placed layer: the mean east-west and north-south distances
  between those cores, times ``e_hop_ew`` / ``e_hop_ns``. LOW sends one message per spike;
  HIGH one per destination core its fan-out reaches (``ceil(fan-out / neurons per core) + 1``,
  at most all of them). Chip-to-chip links are priced as mesh hops (a lower bound).
* **Host I/O**: what the design forces across the host link every inference: the stem current
  into the chip (LOW: once, held as a bias; HIGH: every step), the SE side-car traffic (the
  current out to the host's pooling and the gated current back, every step), the head's
  pooled spikes out (1 bit each) and fc1's current back in. Values are ``activation_bits``
  (LOW) or ``accumulator_bits`` (HIGH) of the host wide, priced at the host's ``e_io_bit`` /
  ``e_io_bit_high``.

A cost whose constants a target lacks is not charged and a note says so: the HIGH bound is
then not an upper bound for that target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nalln.energy.chip_fit import FitResult
from nalln.energy.cost_models import Term, group_of
from nalln.energy.counting import NetworkCounts
from nalln.energy.modes import Bound
from nalln.energy.onchip_gates import graded_surcharge
from nalln.hardware_targets.schema import Target


@dataclass(frozen=True)
class ChipCosts:
    """Extra terms of one chip estimate at one bound, and what was left out."""

    bound: Bound
    terms: tuple[Term, ...]
    notes: tuple[str, ...]
    latency_s: float | None  # T x t_step (None: no cited time per step)

    @property
    def pj(self) -> float:
        return sum(t.pj for t in self.terms)


def _coords(start: int, n: int, width: int) -> np.ndarray:
    idx = np.arange(start, start + n)
    return np.stack([idx % width, idx // width], axis=1)


def _mean_distance(a: np.ndarray, b: np.ndarray, limit: int = 512) -> tuple[float, float]:
    """Mean |dx| and |dy| between every core of ``a`` and every core of ``b`` (subsampled to
    ``limit`` cores each, evenly, for very large layers)."""
    if len(a) > limit:
        a = a[np.linspace(0, len(a) - 1, limit).astype(int)]
    if len(b) > limit:
        b = b[np.linspace(0, len(b) - 1, limit).astype(int)]
    d = np.abs(a[:, None, :] - b[None, :, :])
    return float(d[..., 0].mean()), float(d[..., 1].mean())


def static_terms(
    counts: NetworkCounts, chip: Target, energy: Target, fit: FitResult | None, bound: Bound
) -> tuple[list[Term], list[str], float | None]:
    """Static power x latency (per chip); (terms, notes, latency in s)."""
    if not energy.has("p_static", "t_step"):
        missing = ", ".join(energy.missing("p_static", "t_step"))
        note = f"{chip.id}: no cited {missing}: static power x latency not charged"
        synop = energy.constants.get("e_synop")
        if synop is not None and "static power" in synop.note:
            note += " (its per-event figure includes static power)"
        else:
            note += " (so the high end is not an upper bound)"
        return [], [note], None
    latency = counts.num_steps * energy.value("t_step")
    chips = fit.chips() if (fit is not None and bound is Bound.HIGH) else 1
    pj = energy.value("p_static") * latency * 1e12
    what = f"static power x latency ({chips} chip{'s' if chips > 1 else ''})"
    return [Term("static", what, float(chips), pj, False, chip.id)], [], latency


def hop_terms(
    counts: NetworkCounts, chip: Target, energy: Target, fit: FitResult | None, bound: Bound
) -> tuple[list[Term], list[str]]:
    """Spike routing between the cores of consecutive placed layers."""
    if not energy.has("e_hop_ew", "e_hop_ns"):
        return [], [f"{chip.id}: no cited hop energies: spike routing not charged"]
    if fit is None or not chip.has("cores_per_chip"):
        return [], [f"{chip.id}: no placement (no per-core limits): spike routing not charged"]
    if not fit.feasible:
        return [], [f"{chip.id}: the network does not fit: spike routing not charged"]
    width = math.ceil(math.sqrt(chip.value("cores_per_chip")))
    starts = np.cumsum([0] + [r.cores for r in fit.layers])
    ew, ns = energy.value("e_hop_ew"), energy.value("e_hop_ns")
    terms: list[Term] = []
    for i in range(len(fit.layers) - 1):
        src, dst = fit.layers[i], fit.layers[i + 1]
        P = counts.population(src.layer)
        if P is None or dst.input != "spikes (on chip)" or dst.fed_by is None:
            continue  # a readout, or the next layer is fed by the host (host I/O covers it)
        spikes = counts.per_inference(float(P.spikes.sum()))
        if not spikes:
            continue
        dx, dy = _mean_distance(
            _coords(int(starts[i]), src.cores, width),
            _coords(int(starts[i + 1]), dst.cores, width),
        )
        messages = 1.0
        if bound is Bound.HIGH:
            L = counts.layer(dst.fed_by)
            events = counts.per_inference(float(L.ac.sum() + L.mac.sum()))
            fan_out = events / spikes
            messages = float(min(dst.cores, math.ceil(fan_out / max(1, dst.per_core)) + 1))
        g = group_of(dst.fed_by)
        terms.append(
            Term(g, "spike routing (hops)", spikes * messages, dx * ew + dy * ns, True, chip.id)
        )
    notes = [
        f"{chip.id}: routing from a sequential placement on a {width}-wide core mesh; "
        "chip-to-chip links priced as mesh hops"
    ]
    return terms, notes


def io_terms(counts: NetworkCounts, chip: Target, host: Target, bound: Bound) -> list[Term]:
    """Host <-> chip traffic of the layers and gates the chip cannot run."""
    key = "e_io_bit" if bound is Bound.LOW else "e_io_bit_high"
    if not host.has(key):
        return []
    e_bit = host.value(key)
    bits = host.value("activation_bits" if bound is Bound.LOW else "accumulator_bits")
    T = counts.num_steps
    terms: list[Term] = []
    hid = host.id
    for L in counts.layers:
        if L.spike_input or L.population is None:
            continue  # on chip, or feeds the host's own next stage (SE fc1 -> fc2 -> gate)
        steps = 1 if (L.once and bound is Bound.LOW) else T
        n = L.out_elements * steps * bits
        terms.append(Term(group_of(L.name), "host I/O: current into chip", n, e_bit, False, hid))
    for E in counts.extras:
        if E.kind == "se_gate":  # the current out to the host, the gated current back
            n = 2 * E.elements * E.steps * bits
            terms.append(Term(E.name, "host I/O: SE current out and back", n, e_bit, False, hid))
        else:  # pooled input: spikes out (1 bit each) or analog values
            b = 1 if E.binary_input else bits
            n = E.elements * E.steps * b
            terms.append(Term(E.name, "host I/O: pooled input out", n, e_bit, False, hid))
    return terms


def chip_costs(
    counts: NetworkCounts,
    chip: Target,
    energy: Target,
    host: Target,
    fit: FitResult | None,
    bound: Bound,
) -> ChipCosts:
    """Static, routing and host I/O terms of ``counts`` on ``chip`` at ``bound``."""
    st, notes, latency = static_terms(counts, chip, energy, fit, bound)
    hops, hop_notes = hop_terms(counts, chip, energy, fit, bound)
    io = io_terms(counts, chip, host, bound)
    graded: list[Term] = []
    if bound is Bound.HIGH:  # graded events of on-chip SE gates at the high figure
        graded, graded_notes = graded_surcharge(counts, chip.id, energy)
        notes += graded_notes
    if not io:
        notes.append(f"host {host.id} has no e_io_bit: host I/O not charged")
    if energy is not chip:
        notes.append(f"static power and hops of {chip.id}: PROXY figures of {energy.id}")
    return ChipCosts(bound, tuple(st + hops + io + graded), tuple(notes + hop_notes), latency)
