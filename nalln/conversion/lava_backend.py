"""Lava back-end: a Lava process graph built from the deployment plan, run on the CPU with
``Loihi2SimCfg`` (float ``floating_pt`` or Loihi bit-accurate ``fixed_pt`` models).

Per stage: Lava ``Conv`` or ``Dense`` -> [our ``SEGate`` process, hybrid] -> Lava ``LIFReset``
(our ``ProgrammableLIF`` for a population with a producer's semantics: a subtracting reset, spike
counts as graded spikes - then the next synapse reads 24-bit messages - or a membrane floor;
float and fixed point), plus one of our ``Recorder`` processes per layer. How the Lava-specific
pitfalls are handled (toolchain.md):

* Latency. Every Conv/Dense sends the previous step's result, so stage ``k`` (0-based) sees the
  image's step ``t`` at Lava step ``t + k + 1`` (the source sends on steps 1..T). Each LIF's
  window for image ``j`` is steps ``2 + k + jT ... 1 + k + (j+1)T``.
* Bias and state between images. The bias lives in the neuron (``bias_mant``), which also
  integrates it during the latency steps before its window; ``LIFReset`` with
  ``reset_interval = T`` and ``reset_offset = (2 + k) mod T`` zeroes ``u`` and ``v`` at the start
  of every window, wiping that and the previous image's state. Images therefore stream back to
  back, one every T steps, through one network (N images take ``N*T + depth + 1`` steps).
* Layout. Lava tensors are (W, H, C): images and weights are transposed, conv kernels flipped
  (Lava convolves, torch correlates), stride/padding given as (W, H). A dense layer after a
  conv reads the port through ``transpose([2, 1, 0]).flatten()``, i.e. in torch's C-order.
* Decay and threshold: ``du = dt/tau_syn`` (1 for no current memory), ``dv = dt/tau``,
  ``vth = v_th`` (float); ``du = round(4096 dt/tau_syn) - 1`` (4095: none),
  ``dv = round(4096 dt/tau)``, integer ``vth`` and ``bias_exp = 6`` (fixed point).
* Recurrence (``neuron -> w -> neuron``): a Lava ``Dense`` from the LIF's ``s_out`` back into
  its ``a_in`` (:class:`~nalln.conversion.lava_processes.processes.RecurrentDense`). A Dense
  sends on step t what it computed from step t - 1: NIR's one-step delay. It sends nothing on the
  first step of each window, so the previous input's last spikes never reach the next input.
* A bias that must enter the current ``u``, not ``v`` (a CubaLIF's input bias; a loop Affine's
  bias, from the window's second step): one always-on LIF (fires every step from step 1) whose
  spike goes through a ``Dense`` (or ``RecurrentDense``) column of the biases into ``a_in`` -
  how a chip adds a synaptic bias.
* Lava's Conv models store ``groups`` as int8 (breaks >= 128-channel depthwise convs) and loop
  over channel pairs in Python: the run configuration maps Conv to our fixed models.

* On-chip SE (a QStage with ``onchip``): the gate branch and Lava's ``ProdNeuron`` between the
  Conv and the LIF (:func:`_onchip_gate`); the main path waits ``4 - lag`` steps, so that layer
  and every later one read their windows that many steps later.

Recorders write their layer's spikes (or the readout current) to a file from inside their Lava
process, which avoids reading Vars back (~40 us per element).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from functools import singledispatch
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from nalln.conversion import lava_compat
from nalln.ir.drive import Drive
from nalln.ir.plan import PLAN_INPUT, Plan, Stage, image_shape
from nalln.ir.reference import Trace
from nalln.ir.semantics import SpikeMode, departures
from nalln.loihi.arithmetic import DU_NONE, VTH_MAX, round_input
from nalln.loihi.quant_plan import BiasDrive, QStage, QuantPlan, bias_in_current


@dataclass
class LavaRun:
    trace: Trace
    build_seconds: float  # process graph construction + compile + process start (first step)
    run_seconds: float  # the remaining steps
    steps: int
    processes: int


def _whc(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Lava's (W, H, C) of a [C, H, W] map; a Conv1d's [C, L] is (L, 1, C); (N,) stays."""
    shape = image_shape(tuple(shape))
    return tuple(reversed(shape)) if len(shape) == 3 else tuple(shape)


def _lava_conv_weight(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(w).transpose(0, 3, 2, 1)[:, ::-1, ::-1, :])


def _broadcast_bias(bias: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Per-channel bias -> full neuron shape (W, H, C) or (N,)."""
    if len(shape) == 3:
        return np.broadcast_to(bias, shape).copy()
    return np.asarray(bias).reshape(shape).copy()


def input_frames(x: torch.Tensor, plan: Plan, input_scale: float | None) -> dict:
    """``FrameSource`` arguments: each input in Lava's layout ((W, H, C) or (N,)), held for T
    steps, or (a value per step, :class:`Drive`) one frame per step; fixed point: 24-bit
    graded ``round(x * s)``."""
    drive = Drive.of(x, plan.input_shape)
    flat = drive.flat(x).double()
    if input_scale is not None:
        flat = round_input(flat, input_scale)[0]
    a = flat.numpy()
    if a.ndim == 3:  # [N, C, L] (a Conv1d's input) as the height-1 map [N, C, 1, L]
        a = a[:, :, None, :]
    if a.ndim == 4:
        a = a.transpose(0, 3, 2, 1)  # N, W, H, C
    a = a.astype(np.float64 if input_scale is None else np.int32)
    steps = plan.num_steps if drive is Drive.HELD else 1
    return {"frames": np.ascontiguousarray(a), "steps_per_frame": steps}


@dataclass(frozen=True)
class LavaLayer:
    """One stage as Lava receives it: the float stage's own values or the integer ones."""

    stage: Stage | QStage
    weight: np.ndarray
    bias: np.ndarray  # per output channel
    dtype: type  # np.float64 (floating_pt) or np.int32 (fixed_pt)
    lif: dict[str, float | int]  # du, dv, vth, bias_exp of LIFReset
    scale: float = 1.0  # float current = Lava current / scale
    gate_current_scale: float = 0.0  # SE side-car rounding (float models fine-tuned for it)
    recurrent: np.ndarray | None = None  # the loop's weights [n, n] (s_out -> a_in), if any
    recurrent_exp: int = 0  # fixed point: the loop Dense's weight_exp (recurrent is the mantissa)
    drives: tuple[BiasDrive, ...] = ()  # biases into the current, via an always-on neuron
    # the merged synapses' weights (Stage.merged) and weight exponents (0 in float)
    merged: tuple[tuple[np.ndarray, int], ...] = ()


@dataclass(frozen=True)
class LavaNetwork:
    plan: Plan
    layers: tuple[LavaLayer, ...]
    input_scale: float | None  # None: the float image; else 24-bit graded input round(x * s)
    select_tag: str  # Loihi2SimCfg's process-model tag
    fixed: bool


@singledispatch
def lava_network(source: object) -> LavaNetwork:
    """The numbers Lava runs for a float :class:`Plan` or a fixed-point :class:`QuantPlan`."""
    raise TypeError(f"cannot run {type(source).__name__} on Lava")


def _float_drives(st: Stage) -> tuple[BiasDrive, ...]:
    """A CubaLIF's input bias (every step) and a loop Affine's bias (from the window's second
    step) enter the current through an always-on neuron, not as ``bias_mant``."""
    out = []
    if bias_in_current(st):
        out.append(BiasDrive(np.asarray(st.synapse.bias, np.float64), 0, 0))
    if st.recurrent is not None and np.any(st.recurrent.bias != 0):
        out.append(BiasDrive(np.asarray(st.recurrent.bias, np.float64), 0, 1))
    return tuple(out)


@lava_network.register
def _(plan: Plan) -> LavaNetwork:
    layers = []
    for st in plan.stages:
        n, g = st.neuron, st.gate
        lif = (
            {"du": float(n.current_decay), "dv": float(n.decay), "vth": float(n.v_th)}
            | {"bias_exp": 0}
            if n
            else _readout_lif(st, False)
        )
        gcs = 0.0 if g is None or g.current_scale is None else float(g.current_scale)
        rec = None if st.recurrent is None else st.recurrent.weight
        bias = sum(s.bias for s in st.synapses) * (not bias_in_current(st))
        drives = _float_drives(st)
        merged = tuple((m.weight, 0) for m in st.merged)
        layers.append(
            LavaLayer(
                st, st.synapse.weight, bias, np.float64, lif, 1.0, gcs, rec, 0, drives, merged
            )
        )
    return LavaNetwork(plan, tuple(layers), None, "floating_pt", False)


def _readout_lif(st: Stage | QStage, fixed: bool) -> dict[str, float | int]:
    """``LIReadout``'s LIF parameters for an LI / Integrator readout (none for nalln's own
    current readout): no current memory, its decay, a threshold it never reaches."""
    ro = st.readout
    if ro is None:
        return {}
    if fixed:
        return {"du": DU_NONE, "dv": int(st.dv), "vth": VTH_MAX, "bias_exp": 6}
    return {"du": 1.0, "dv": float(ro.decay), "vth": float("inf"), "bias_exp": 0}


def neuron_rules(st: Stage | QStage) -> dict | None:
    """``ProgrammableLIF``'s semantics for a population that is not NIR's (``v_min`` in float,
    or the fixed point's mantissa ``vmin``); ``None``: Lava's own ``LIFReset``."""
    n = st.neuron
    if n is None or not departures(n.reset, n.spikes, n.v_min):
        return None
    floor = st.vmin if isinstance(st, QStage) else n.v_min
    return {"reset": n.reset.value, "multi": n.spikes is SpikeMode.MULTI, "v_min": floor}


@lava_network.register
def _(qp: QuantPlan) -> LavaNetwork:
    layers = []
    for q in qp.stages:
        lif = (
            {"du": int(q.du), "dv": int(q.dv), "vth": int(q.vth), "bias_exp": 6}
            if q.neuron
            else _readout_lif(q, True)
        )
        layers.append(
            LavaLayer(
                q,
                q.weight,
                q.bias,
                np.int32,
                lif,
                float(q.scale),
                recurrent=None if q.recurrent is None else q.recurrent >> q.recurrent_exp,
                recurrent_exp=q.recurrent_exp,
                drives=q.drives,
                merged=tuple((m.weight >> m.exp, m.exp) for m in q.merged),
            )
        )
    return LavaNetwork(qp.plan, tuple(layers), qp.input_scale, "fixed_pt", True)


def _always_on(lif_cls, fixed: bool):
    """A one-neuron LIF that fires on every step from step 1 (bias above threshold, reset to 0):
    its spike through a dense column is a bias on the target's current, as on chip."""
    if fixed:  # v = 0 + 0 + (1 << 6) > 0
        return lif_cls(shape=(1,), du=4095, dv=0, vth=0, bias_mant=1, bias_exp=6, name="always")
    return lif_cls(shape=(1,), du=1.0, dv=1.0, vth=0.5, bias_mant=1.0, name="always")


def run_lava(
    source: Plan | QuantPlan,
    x: torch.Tensor,
    *,
    record: bool = True,
    workdir: str | Path | None = None,
    progress: bool = False,
) -> LavaRun:
    """Stream normalised images ``x`` [N, C, H, W] through the Lava process graph."""
    lava_compat.import_lava("lava.proc.conv.process")
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.lif.process import LIF, LIFReset

    from nalln.conversion.lava_processes.delay import WindowedDelay
    from nalln.conversion.lava_processes.processes import (
        FrameSource,
        LIReadout,
        ProgrammableLIF,
        Recorder,
        RecurrentDense,
        SEGate,
        conv_model_map,
    )

    net = lava_network(source)
    plan = net.plan
    T, N = plan.num_steps, int(x.shape[0])
    t0 = time.perf_counter()
    src = FrameSource(**input_frames(x, plan, net.input_scale))
    procs: list = [src]
    port = src.s_out
    prev_shape = _whc(tuple(plan.input_shape))
    tmp = tempfile.TemporaryDirectory(dir=workdir, prefix="nalln-lava-")
    folder = Path(tmp.name)
    recorders: dict[str, tuple[Path, tuple[int, ...], bool]] = {}
    last = 0
    always = None  # the always-on neuron that drives bias columns, if any layer needs one
    shift = 0  # steps the main-path delays of earlier on-chip SE blocks add
    # what each synapse may read: port, Lava shape, message bits, level (hops from the input)
    levels = plan.levels()
    graded = 0  # message bits of what the last population sends (24: a multi-spike's counts)
    ports = {PLAN_INPUT: (port, prev_shape, 24, -1, 1)}  # (+ the step image 0's step 0 arrives)
    for k, layer in enumerate(net.layers):
        st = layer.stage
        syns = st.synapses
        weights = [(layer.weight, 0), *layer.merged]
        level = levels[st.name]
        base = 2 + level + shift  # Lava step of this stage's current for image 0, step 0
        currents = []
        for syn, (w, w_exp) in zip(syns, weights, strict=True):
            s_port, s_shape, bits, s_level, s_first = ports[plan.reads(k, syn)]
            align = level - 1 - s_level  # steps a shorter path waits at a merge
            if align or syn.delay is not None:
                delays = np.zeros(s_shape, np.int64)
                if syn.delay is not None:
                    delays = _whc_array(np.asarray(syn.delay, np.int64))
                line = WindowedDelay(
                    shape=s_shape, delays=delays, align=align, first=s_first, period=T
                )
                s_port.connect(line.a_in)
                procs.append(line)
                s_port = line.a_out
            synapse = _synapse_process(syn, w, w_exp, layer.dtype, s_shape, bits, Conv, Dense)
            if syn.kind == "conv":
                s_port.connect(synapse.s_in)
            else:
                src_port = s_port.transpose([2, 1, 0]).flatten() if len(s_shape) == 3 else s_port
                src_port.connect(synapse.s_in)
            procs.append(synapse)
            currents.append(synapse.a_out)
        out_shape = _whc(tuple(st.synapse.out_shape))
        current = currents[0]
        bias = layer.bias
        if st.neuron is None:  # readout: record the current, or an LI / I readout's membrane
            path = folder / f"{k}.npy"
            rec = Recorder(
                shape=out_shape, first_step=base, n_steps=N * T, path=str(path), binary=False
            )
            if st.readout is not None:
                li = LIReadout(
                    shape=out_shape,
                    bias_mant=_broadcast_bias(np.asarray(bias), out_shape).astype(layer.dtype),
                    reset_interval=T,
                    reset_offset=base % T,
                    **layer.lif,
                )
                for c in currents:  # an InPort sums what several OutPorts send
                    c.connect(li.a_in)
                li.v_out.connect(rec.a_in)
                procs.append(li)
            else:
                for c in currents:
                    c.connect(rec.a_in)
            procs.append(rec)
            recorders[st.name] = (path, out_shape, False, tuple(syn.out_shape))
            last = base + N * T - 1
            break
        onchip = getattr(st, "onchip", None)
        if onchip is not None:
            current, delay = _onchip_gate(onchip, current, out_shape, bias, T, base, procs)
            shift += delay
            base += delay
            neuron_bias = np.zeros(out_shape)
        elif st.gate is not None:
            g = st.gate
            gate = SEGate(
                shape=out_shape,
                bias=np.asarray(bias, np.float64),
                w1=g.w1,
                b1=g.b1,
                w2=g.w2,
                b2=g.b2,
                scale=layer.scale,
                current_scale=layer.gate_current_scale,
            )
            current.connect(gate.a_in)
            current = gate.a_out
            procs.append(gate)
            neuron_bias = np.zeros(out_shape)
        else:
            neuron_bias = _broadcast_bias(np.asarray(bias), out_shape)
        n = st.neuron
        rules = neuron_rules(st)
        lif_kind = LIFReset if rules is None else ProgrammableLIF
        extra = rules or {}
        lif = lif_kind(
            shape=out_shape,
            bias_mant=neuron_bias.astype(layer.dtype),
            reset_interval=T,
            reset_offset=base % T,
            **layer.lif,
            **extra,
        )
        current.connect(lif.a_in)
        for c in currents[1:]:  # a merge: the InPort sums the currents
            c.connect(lif.a_in)
        procs.append(lif)
        if layer.recurrent is not None:  # s_out -> Dense -> a_in, one step late, per window
            loop = RecurrentDense(
                weights=np.asarray(layer.recurrent).astype(layer.dtype),
                reset_interval=T,
                reset_offset=base,
                weight_exp=layer.recurrent_exp,
            )
            lif.s_out.connect(loop.s_in)
            loop.a_out.connect(lif.a_in)
            procs.append(loop)
        for d in layer.drives:  # always-on neuron -> dense column of biases -> a_in
            if always is None:
                always = _always_on(LIF, net.fixed)
                procs.append(always)
            col = _broadcast_bias(np.asarray(d.values), out_shape).reshape(-1, 1)
            col = (col.astype(np.int64) >> d.exp) if net.fixed else col
            kw = {"weights": col.astype(layer.dtype), "weight_exp": int(d.exp)}
            column = (
                Dense(**kw)
                if d.from_step == 0
                else RecurrentDense(**kw, reset_interval=T, reset_offset=base)
            )
            always.s_out.connect(column.s_in)
            column.a_out.reshape(out_shape).connect(lif.a_in)
            procs.append(column)
        last = base + N * T - 1
        multi = n.spikes is SpikeMode.MULTI  # graded spikes: counts, weighed downstream
        if record:
            path = folder / f"{k}.npy"
            rec = Recorder(
                shape=out_shape, first_step=base, n_steps=N * T, path=str(path), binary=not multi
            )
            lif.s_out.connect(rec.a_in)
            procs.append(rec)
            recorders[n.name] = (path, out_shape, "counts" if multi else True, tuple(n.shape))
        port = lif.s_out
        prev_shape = out_shape
        graded = 24 if multi else 0
        ports[st.name] = (port, out_shape, graded, level, base)
    if not recorders:  # nothing recorded: still need the output spikes
        path = folder / "out.npy"
        rec = Recorder(
            shape=prev_shape,
            first_step=last - N * T + 1,
            n_steps=N * T,
            path=str(path),
            binary=not graded,  # graded: the last population sends counts
        )
        port.connect(rec.a_in)
        procs.append(rec)
        chw = tuple(reversed(prev_shape)) if len(prev_shape) == 3 else tuple(prev_shape)
        recorders["__output__"] = (path, prev_shape, "counts" if graded else True, chw)
    cfg = Loihi2SimCfg(
        select_tag=net.select_tag,
        exception_proc_model_map=conv_model_map(net.fixed),
    )
    chunk = T * max(1, N // 20)
    try:
        src.run(condition=RunSteps(num_steps=1), run_cfg=cfg)
        t1 = time.perf_counter()
        done = 1
        with tqdm(total=last, desc="lava steps", disable=not progress, leave=False) as bar:
            bar.update(1)
            while done < last:
                k = min(chunk, last - done)
                src.run(condition=RunSteps(num_steps=k), run_cfg=cfg)
                done += k
                bar.update(k)
        t2 = time.perf_counter()
    finally:
        src.stop()
    try:
        trace = _collect(recorders, net.layers[-1], N, T)
    finally:
        tmp.cleanup()
    return LavaRun(trace, t1 - t0, t2 - t1, last, len(procs))


def _whc_array(a: np.ndarray) -> np.ndarray:
    """A [C, H, W] array in Lava's (W, H, C) layout (1-D arrays as they are)."""
    return np.ascontiguousarray(a.transpose(2, 1, 0)) if a.ndim == 3 else a


def _synapse_process(syn, w, w_exp: int, dtype, in_shape, bits: int, conv_cls, dense_cls):
    """The Lava Conv or Dense of one synapse reading a port of shape ``in_shape`` (Lava's
    layout) with ``bits``-bit messages (0: spikes)."""
    if syn.kind == "conv":
        synapse = conv_cls(
            weight=_lava_conv_weight(w).astype(dtype),
            weight_exp=int(w_exp),
            input_shape=in_shape,
            padding=tuple(reversed(syn.padding)),
            stride=tuple(reversed(syn.stride)),
            groups=int(syn.groups),
            num_message_bits=bits,
        )
        if tuple(synapse.output_shape) != _whc(tuple(syn.out_shape)):
            raise AssertionError(f"{syn.source}: Lava conv output {synapse.output_shape}")
        return synapse
    kw = {"weight_exp": int(w_exp)} if w_exp else {}
    return dense_cls(weights=np.asarray(w).astype(dtype), num_message_bits=bits, **kw)


def _onchip_gate(gate, current, shape: tuple[int, int, int], bias, T: int, base: int, procs: list):
    """The on-chip SE block of one layer as Lava processes (``nalln.loihi.onchip_se``): the
    current fans out to C accumulators (``ChannelSum``) -> Dense fc1 -> ``GradedReLU`` -> Dense
    fc2 -> ``HardSigmoidGate`` -> Dense broadcast (each gate to its channel's positions) -> Lava's
    ``ProdNeuron``, whose other input is the current plus bias ``delay`` steps late
    (``CurrentDelay``). Returns the product's port and the delay (steps the layer's neurons and
    everything after them move back)."""
    from lava.proc.dense.process import Dense
    from lava.proc.prodneuron.process import ProdNeuron

    from nalln.conversion.lava_processes.processes import (
        ChannelSum,
        CurrentDelay,
        GradedReLU,
        HardSigmoidGate,
    )
    from nalln.loihi.onchip_se import GATE_BITS, GATE_ONE

    s = gate.scales
    w, h, c = shape
    bias = np.asarray(bias, np.int64)
    delay = s.delay
    csum = ChannelSum(shape=shape, bias=bias, shift=s.sh0)
    fc1 = Dense(weights=gate.w1.astype(np.int32), num_message_bits=24)
    relu = GradedReLU(shape=(gate.hidden,), bias=gate.b1, shift=s.sh1)
    fc2 = Dense(weights=gate.w2.astype(np.int32), num_message_bits=24)
    sig = HardSigmoidGate(
        shape=(c,),
        bias=gate.b2,
        shift=s.sh2,
        one=GATE_ONE,
        rest=gate.rest_gate(),
        period=T,
        phase=(1 - delay - base) % T,
        lag=s.lag,
    )
    fan = np.zeros((w * h * c, c), np.int32)  # (W, H, C) C-order: position i is channel i % C
    fan[np.arange(w * h * c), np.arange(w * h * c) % c] = 1
    bcast = Dense(weights=fan, num_message_bits=24)
    late = CurrentDelay(shape=shape, bias=bias, delay=delay)
    prod = ProdNeuron(shape=shape, vth=0, exp=GATE_BITS)
    current.connect(csum.a_in)
    csum.s_out.connect(fc1.s_in)
    fc1.a_out.connect(relu.a_in)
    relu.s_out.connect(fc2.s_in)
    fc2.a_out.connect(sig.a_in)
    sig.s_out.connect(bcast.s_in)
    current.connect(late.a_in)
    late.a_out.connect(prod.a_in1)
    bcast.a_out.reshape(shape).connect(prod.a_in2)
    procs.extend([csum, fc1, relu, fc2, sig, bcast, late, prod])
    return prod.s_out, delay


def _collect(recorders, readout: LavaLayer, N: int, T: int) -> Trace:
    spikes: dict[str, torch.Tensor] = {}
    outputs = None
    for name, (path, shape, binary, torch_shape) in recorders.items():
        data = np.load(path, allow_pickle=False)
        if binary is True:
            size = int(np.prod(shape))
            data = np.unpackbits(data, axis=1, count=size).astype(bool)
        data = data.reshape(N, T, *shape)  # steps are image-major: j*T + t
        if len(shape) == 3:
            data = data.transpose(0, 1, 4, 3, 2)  # W, H, C -> C, H, W
        data = data.reshape(N, T, *torch_shape)  # a Conv1d's [C, 1, L] is NIR's [C, L]
        tensor = torch.from_numpy(np.ascontiguousarray(data.swapaxes(0, 1)))  # T, N, ...
        if name == "__output__":
            outputs = tensor.reshape(T, N, -1).float()
        elif binary == "counts":  # a multi-spike population's graded spikes
            spikes[name] = tensor.float()
        elif binary is True:
            spikes[name] = tensor
        elif readout.stage.readout is not None:  # an LI / I membrane (fixed: units of a << 6)
            unit = readout.scale * (64.0 if readout.dtype is np.int32 else 1.0)
            outputs = (tensor.double().reshape(T, N, -1) / unit).float()
        else:
            cur = tensor.double()
            bias = torch.from_numpy(np.asarray(readout.bias).astype(np.float64))
            if cur.dim() > 3:  # a conv readout: one bias per channel
                bias = bias.view(-1, *([1] * (cur.dim() - 3)))
            outputs = ((cur + bias).reshape(T, N, -1) / readout.scale).float()
    if outputs is None:
        last = list(spikes)[-1]
        outputs = spikes[last].reshape(T, N, -1).float()
    return Trace(outputs, spikes)
