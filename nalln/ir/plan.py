"""The deployment plan: synapse(s) -> [SE gate] -> neuron stages in topological order.

A chain's stage reads the one before it; a graph with branches and merges names what each
synapse reads (:attr:`Synapse.reads`: the input or an earlier population), and a population with
several inputs sums its synapses' currents (:attr:`Stage.merged`), NIR's rule for several edges
into one node.

Small frozen dataclasses (NIR's style) that every back-end builds from: the float reference
(:mod:`nalln.ir.reference`), the Loihi fixed point (:mod:`nalln.loihi`), Lava and the netx file.
``nalln.conversion.plan.lower`` makes one from a NIR graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nalln.ir.semantics import ResetRule, SpikeMode


@dataclass(frozen=True)
class GateSpec:
    r"""The SE side-car between two segments: per time step, on the current ``x`` [C, H, W]
    leaving segment ``after_segment``: :math:`x \cdot \sigma(W_2\,\mathrm{relu}(W_1
    \mathrm{mean}_{hw}(x) + b_1) + b_2)` is what enters the next segment's first LIF."""

    name: str  # torch module of the SE block, e.g. "stages.0.se"
    after_segment: int
    w1: np.ndarray  # [hidden, C]
    b1: np.ndarray
    w2: np.ndarray  # [C, hidden]
    b2: np.ndarray
    # set for models fine-tuned for hybrid fixed point: y is rounded to k / current_scale, as the
    # side-car sends it to the chip (SqueezeExcite.current_scale)
    current_scale: float | None = None

    @property
    def channels(self) -> int:
        return int(self.w1.shape[1])


PLAN_INPUT = "<input>"  # Synapse.reads for the graph's input


@dataclass(frozen=True)
class Synapse:
    """A conv (``weight`` [Co, Ci/g, kh, kw]) or dense (``weight`` [out, in]) layer with bias.

    A NIR ``Conv1d`` is a conv of height 1: ``weight`` [Co, Ci/g, 1, k], ``in_shape`` [Ci, L],
    ``out_shape`` [Co, L'] (NIR's shapes; :attr:`in_image` / :attr:`out_image` give the
    [C, 1, L] form the convolution runs on).

    A dense layer's ``in_shape`` is the shape whose C-order flattening it reads (it may be
    [C, H, W] when a Flatten was folded in)."""

    kind: str
    weight: np.ndarray
    bias: np.ndarray
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    source: str = ""  # NIR node name
    # what it reads: None, the stage before it (the input for the first stage: a chain);
    # PLAN_INPUT, the graph's input; else the name of an earlier stage (a population)
    reads: str | None = None
    # per input element, how many steps late it reads it (NIR Delay nodes; None: no delay);
    # alignment on a pipelined back-end (Lava) is that back-end's business, not this
    delay: np.ndarray | None = None  # int, shape in_shape (before a folded Flatten)

    @property
    def in_image(self) -> tuple[int, ...]:
        """``in_shape`` as a conv reads it: [C, H, W] (a Conv1d's [C, L] is [C, 1, L])."""
        return image_shape(self.in_shape)

    @property
    def out_image(self) -> tuple[int, ...]:
        """``out_shape`` as a conv writes it (a Conv1d's [C, L'] is [C, 1, L'])."""
        return image_shape(self.out_shape)


def image_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A NIR ``[C, L]`` map (Conv1d) as the height-1 image ``[C, 1, L]`` every conv back-end
    runs (the same C-order values); other shapes unchanged."""
    shape = tuple(int(s) for s in shape)
    return (shape[0], 1, shape[1]) if len(shape) == 2 else shape


@dataclass(frozen=True)
class Neuron:
    r"""A population: per step :math:`u \leftarrow (1 - d_u) u + I`,
    :math:`v \leftarrow (1 - d_v) v + u`, spike if :math:`v > v_{th}`, then :math:`v \leftarrow 0`
    (Lava's LIF with ``du``, ``dv``). ``current_decay = 1`` (no current memory) is a LIF
    (``decay = dt/tau``), an IF (``decay = 0``) or a Threshold (``decay = 1``); below 1 a
    CubaLIF (``current_decay = dt/tau_syn``). ``reset`` and ``spikes`` are the producer's
    semantics where they differ from NIR's (:mod:`nalln.ir.semantics`; default NIR's)."""

    name: str  # NIR node name
    shape: tuple[int, ...]
    decay: float  # dv = dt / tau: v <- (1 - decay) v + u
    v_th: float
    module: str | None = None  # torch module it came from (our exports)
    current_decay: float = 1.0  # du = dt / tau_syn: u <- (1 - du) u + I
    nir_type: str = "LIF"  # the NIR node it was lowered from (for messages)
    reset: ResetRule = ResetRule.ZERO
    spikes: SpikeMode = SpikeMode.SINGLE
    v_min: float | None = None  # a floor on v after the reset (Sinabs's min_v_mem); None: NIR


@dataclass(frozen=True)
class Readout:
    r"""A non-spiking readout integrating the last synapse's current: per step
    :math:`v \leftarrow (1 - d) v + I`, output :math:`v` (an LI with ``d = dt/tau``, an
    Integrator with ``d = 0``; the input gain is folded into the synapse)."""

    name: str  # NIR node name
    decay: float
    nir_type: str = "LI"


@dataclass(frozen=True)
class Stage:
    name: str
    synapse: Synapse | None
    gate: GateSpec | None = None
    neuron: Neuron | None = None  # None: a readout (the current, or ``readout``'s v, is the output)
    readout: Readout | None = None  # the integrating readout after the last synapse, if any
    recurrent: Synapse | None = None  # the neuron's own spikes of the previous step -> its input
    merged: tuple[Synapse, ...] = ()  # further synapses whose currents add to ``synapse``'s

    @property
    def synapses(self) -> tuple[Synapse, ...]:
        """Every synapse into the population (or readout), their currents summed."""
        return (self.synapse, *self.merged)


@dataclass
class Plan:
    input_shape: tuple[int, ...]
    stages: list[Stage]
    num_steps: int
    dt: float
    info: dict[str, Any] = field(default_factory=dict)

    def reads(self, k: int, syn: Synapse) -> str:
        """What synapse ``syn`` of stage ``k`` reads: :data:`PLAN_INPUT` or a stage's name."""
        if syn.reads is not None:
            return syn.reads
        return PLAN_INPUT if k == 0 else self.stages[k - 1].name

    def levels(self) -> dict[str, int]:
        """Hops from the input (the input is -1; a stage is one more than the deepest thing
        its synapses read): on a pipelined back-end (Lava: one step per Conv/Dense) stage
        ``k`` of a chain is at level ``k``; a merge's shorter paths wait the difference."""
        out = {PLAN_INPUT: -1}
        for k, st in enumerate(self.stages):
            syns = st.synapses if st.synapse is not None else ()
            out[st.name] = 1 + max((out[self.reads(k, s)] for s in syns), default=-1)
        return out

    @property
    def is_chain(self) -> bool:
        """Every stage reads only the stage before it, without delays (netx's layer list)."""
        return all(
            not st.merged
            and st.synapse.delay is None
            and self.reads(k, st.synapse) == (PLAN_INPUT if k == 0 else self.stages[k - 1].name)
            for k, st in enumerate(self.stages)
        )

    @property
    def neurons(self) -> list[Neuron]:
        return [s.neuron for s in self.stages if s.neuron is not None]

    @property
    def readout(self) -> Stage | None:
        last = self.stages[-1]
        return last if last.neuron is None else None

    @property
    def output_size(self) -> int:
        last = self.stages[-1]
        shape = last.synapse.out_shape if last.neuron is None else last.neuron.shape
        return int(np.prod(shape))
