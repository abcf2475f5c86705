r"""SRAM reads of an analog (MAC) layer on a reuse-aware ANN accelerator.

Lemaire et al. 2022 charge an input and a weight read on every MAC (no reuse): an upper bound.
A row-stationary accelerator (Chen, Emer, Sze, ISCA 2016; the Eyeriss chip, JSSC 2017) keeps
weights, input rows and partial sums in per-PE register files and moves each operand through
the global buffer as few times as the buffer allows. This module charges that traffic at its
ideal:

* weights: each read from SRAM once per layer per inference (per step the layer runs);
* inputs: each read once per weight tile, where a tile is what fits in the global buffer
  beside the inputs: ``passes = ceil((input bits + weight bits) / buffer bits)``;
* partial sums stay in the register files (not charged: register-file energy is not in
  Horowitz's table, so this is the ANN's LOWER bound); outputs and biases as in Lemaire's model.

Buffer size: the target's ``global_buffer`` constant (cited in its file); a target without one
is assumed to hold every layer (one pass).
"""

from __future__ import annotations

import math

from nalln.energy.counting import SynapticLayer
from nalln.hardware_targets.schema import Target


def weight_tiles(L: SynapticLayer, t: Target) -> int:
    """How many times the layer's inputs pass through the buffer (1 when all fits)."""
    if not t.has("global_buffer"):
        return 1
    in_bits = L.in_elements * t.value("activation_bits")
    w_bits = L.weights * t.value("weight_bits")
    buf = t.value("global_buffer")
    return max(1, math.ceil((in_bits + w_bits) / buf))


def reuse_reads(L: SynapticLayer, t: Target) -> tuple[float, float]:
    """(input reads, weight reads) per inference of layer ``L`` under ideal reuse."""
    steps = L.steps_run
    return float(L.in_elements * weight_tiles(L, t) * steps), float(L.weights * steps)
