"""netx HDF5 (lava-dl's network exchange format, the one Lava runs on Loihi 2) for the
NIR-native (static-SE) network, written from the calibrated fixed-point plan.

Layout read by ``lava.lib.dl.netx.hdf5.Network``: ``layer/<i>`` groups with ``type`` (input,
conv, flatten, dense), ``shape`` (C, H, W order; netx reverses it), integer ``weight`` in torch
layout (netx flips and transposes conv kernels itself), ``bias`` (the neuron's ``bias_mant``,
which netx shifts by 6 like our fixed point) and a ``neuron`` group (CUBA: ``iDecay`` = du + 1,
so a CubaLIF's current decay is kept; ``vDecay`` = dv, ``vThMant``). A recurrent layer is netx's
``dense_rec`` (``weight`` and ``weight_rec``; netx's ``RecurrentDense`` block wires a Lava Dense
from the neuron's ``s_out`` back into its ``a_in``, one step late); netx derives one weight
exponent (<= 0) from both 8-bit matrices, so a loop that needs ``weight_exp > 0`` is refused,
and so is a bias that must enter the current (:func:`netx_refusal`).
netx has no pooling layer: the head's global average pooling is already folded into the dense
layer after it. The readout layer gets a non-spiking integrator
(``vDecay = 0``, threshold above any reachable voltage): its voltage after the window is
``64 * sum_t (a_t + bias)``, from which :func:`read_logits` recovers the mean logits.

Run it with ``Network(path, input_message_bits=24, reset_interval=T, reset_offset=1)``: netx
gives layer ``i`` the reset offset ``2 + i``, exactly the window start of our process graph.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

from nalln.conversion import lava_compat
from nalln.errors import NallnError
from nalln.ir.plan import PLAN_INPUT, image_shape
from nalln.ir.semantics import departures
from nalln.loihi.arithmetic import VTH_MAX
from nalln.loihi.quant_plan import QuantPlan


def _type(group: h5py.Group, name: str) -> None:
    group.create_dataset("type", (1,), "S10", [name.encode("ascii")])


def _neuron(group: h5py.Group, dv: int, vth: int, du: int = 4095) -> None:
    n = group.create_group("neuron")
    _type(n, "CUBA")
    n.create_dataset("iDecay", data=int(du) + 1)  # netx gives Lava du = iDecay - 1
    n.create_dataset("vDecay", data=int(dv))
    n.create_dataset("vThMant", data=int(vth))
    n.create_dataset("refDelay", data=1)
    n.create_dataset("gradedSpike", data=False)


def semantics_refusal(qp: QuantPlan) -> str | None:
    """Why netx cannot hold a population with a producer's semantics (one line), or None:
    netx builds its CUBA neurons as Lava's ``LIF``/``LIFReset``: reset to zero, one spike per
    step, no floor (no netx neuron type sends a count)."""
    for q in qp.stages:
        n = q.neuron
        what = "" if n is None else departures(n.reset, n.spikes, n.v_min)
        if what:
            return (
                f"netx cannot hold {n.nir_type} node {n.name!r}: it {what}, and netx's CUBA "
                "neuron resets to zero and sends one spike per step (Lava fixed point runs it: "
                "fixed_point.json)"
            )
    return None


def netx_refusal(qp: QuantPlan) -> str | None:
    """Why netx cannot hold ``qp`` (one line), or None: netx's layers have no always-on neuron
    to carry a bias into the current (a CubaLIF's input bias, a loop Affine's bias), and its
    ``dense_rec`` derives one weight exponent <= 0 from 8-bit weights; its neurons have NIR's
    semantics only (:func:`semantics_refusal`); its file is a sequence of layers, each reading
    the one before (no branch, merge or delay)."""
    reason = semantics_refusal(qp)
    if reason:
        return reason
    plan = qp.plan
    for k, q in enumerate(qp.stages):
        if q.merged:
            return (
                f"netx cannot hold layer {q.name!r}: it sums {len(q.merged) + 1} synapses (a "
                "merge); a netx file is a sequence of layers, each reading only the one before"
            )
        if q.synapse.delay is not None:
            return (
                f"netx cannot hold layer {q.name!r}: it reads its input through a Delay; netx "
                "layers have no per-element delay"
            )
        prev = "the input" if k == 0 else repr(qp.stages[k - 1].name)
        reads = plan.reads(k, q.synapse)
        if reads != (PLAN_INPUT if k == 0 else qp.stages[k - 1].name):
            return (
                f"netx cannot hold layer {q.name!r}: it reads {reads!r}, not {prev} (a branch); "
                "a netx file is a sequence of layers, each reading only the one before"
            )
    for q in qp.stages:
        if q.drives:
            what = "its bias enters the synaptic current (a CubaLIF's input bias or a loop bias)"
            return (
                f"netx cannot hold layer {q.name!r}: {what}, which takes an always-on neuron "
                "and a dense column; netx layers are a chain of synapse + neuron blocks"
            )
        if q.recurrent is not None and q.recurrent_exp:
            return (
                f"netx cannot hold layer {q.name!r}: its loop weights need weight exponent "
                f"{q.recurrent_exp}, and netx's dense_rec derives one exponent <= 0 from 8-bit "
                "weights (calibrate with recurrent_exp=False for netx)"
            )
    return None


def write_netx(qp: QuantPlan, path: str | os.PathLike) -> Path:
    """Write the static fixed-point plan as a netx ``.net`` file (atomically)."""
    if any(q.gate is not None for q in qp.stages):
        raise NallnError(
            "netx cannot hold the SE side-car (hybrid mode); export with --se static for netx"
        )
    reason = netx_refusal(qp)
    if reason:
        raise NallnError(reason)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            layers = f.create_group("layer")
            i = 0
            g = layers.create_group(str(i))
            _type(g, "input")
            g.create_dataset("shape", data=np.array(image_shape(qp.plan.input_shape)))
            prev_dims = len(image_shape(qp.plan.input_shape))
            for q in qp.stages:
                if q.kind == "dense" and prev_dims == 3:
                    i += 1
                    g = layers.create_group(str(i))
                    _type(g, "flatten")
                    g.create_dataset("shape", data=np.array([int(np.prod(q.in_shape))]))
                i += 1
                g = layers.create_group(str(i))
                _type(g, q.kind if q.recurrent is None else "dense_rec")
                shape = q.synapse.out_image if q.kind == "conv" else q.out_shape
                g.create_dataset("shape", data=np.array(shape))
                g.create_dataset("weight", data=q.weight.astype(np.int32))
                if q.recurrent is not None:
                    g.create_dataset("weight_rec", data=q.recurrent.astype(np.int32))
                g.create_dataset("bias", data=q.bias.astype(np.int32))
                if q.kind == "conv":
                    g.create_dataset("stride", data=np.array(q.stride))  # (H, W): netx flips
                    g.create_dataset("padding", data=np.array(q.padding))
                    g.create_dataset("dilation", data=np.array([1, 1]))
                    g.create_dataset("groups", data=int(q.groups))
                if q.neuron is None:  # integrator (an LI: its decay) for the readout
                    _neuron(g, q.dv if q.readout is not None else 0, VTH_MAX)
                else:
                    _neuron(g, q.dv, q.vth, q.du)
                prev_dims = len(shape)
            f.attrs["nalln"] = (
                f"NeurALLNet static-SE fixed point; T={qp.plan.num_steps}; input = round(x * "
                f"{qp.input_scale!r}) as 24-bit graded spikes; readout v / (64 * scale * T)"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def run_netx(path: str | os.PathLike, qp: QuantPlan, x: torch.Tensor) -> np.ndarray:
    """Load ``path`` with ``lava.lib.dl.netx.hdf5.Network`` and run one input ``x`` ([1, ...]
    held, or [1, T, ...] per step) in Lava (fixed point). A graph with a readout gives its mean
    logits, read from the readout integrator's voltage; a graph that ends in spiking neurons
    gives the output spikes [T, K], recorded from the network's output port."""
    lava_compat.import_lava("lava.lib.dl.netx")
    from lava.lib.dl.netx.hdf5 import Network
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    from nalln.conversion.lava_backend import input_frames
    from nalln.conversion.lava_processes.processes import FrameSource, Recorder, conv_model_map

    T = qp.plan.num_steps
    net = Network(net_config=str(path), input_message_bits=24, reset_interval=T, reset_offset=1)
    src = FrameSource(**input_frames(x[:1], qp.plan, qp.input_scale))
    src.s_out.connect(net.inp)
    depth = len(qp.stages) - 1
    spiking = qp.stages[-1].neuron is not None
    with tempfile.TemporaryDirectory(prefix="nalln-netx-") as tmp:
        rec_path = Path(tmp) / "out.npy"
        if spiking:
            shape = tuple(net.out.shape)
            rec = Recorder(
                shape=shape, first_step=2 + depth, n_steps=T, path=str(rec_path), binary=True
            )
            net.out.connect(rec.a_in)
        cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=conv_model_map(True))
        try:
            src.run(condition=RunSteps(num_steps=depth + T + 1), run_cfg=cfg)
            if not spiking:
                v = np.asarray(net.layers[-1].neuron.v.get(), dtype=np.float64)
                if v.ndim == 3:  # a conv readout: (W, H, C) -> torch's C-order
                    v = v.transpose(2, 1, 0)
                v = v.reshape(-1)
        finally:
            src.stop()
        if spiking:
            bits = np.load(rec_path, allow_pickle=False)
            size = int(np.prod(shape))
            spikes = np.unpackbits(bits, axis=1, count=size).reshape(T, *shape)
            if len(shape) == 3:  # (W, H, C) -> torch's (C, H, W) order
                spikes = spikes.transpose(0, 3, 2, 1)
            return spikes.reshape(T, -1).astype(np.float64)
    q = qp.stages[-1]
    if q.readout is not None:  # an LI / Integrator: its membrane at the window's last step
        return v / (64.0 * q.scale)
    return v / (64.0 * q.scale * T)


def check_netx(path: str | os.PathLike, qp: QuantPlan, x: torch.Tensor) -> dict:
    """Load the netx file back, run one input and compare it with the bit-exact emulator: the
    readout's mean logits, or (a graph ending in spiking neurons) the output spikes per step,
    never the last membrane as if it were a readout. One error line if they differ."""
    from nalln.loihi.emulator import emulate

    table = describe_netx(path)
    summary = {
        "file": str(path),
        "loaded_by": "lava.lib.dl.netx.hdf5.Network",
        "layers": table.count("\n"),
    }
    if qp.stages[-1].neuron is None:
        got = run_netx(path, qp, x[:1])
        em = emulate(qp, x[:1]).trace
        membrane = qp.stages[-1].readout is not None
        expected = (em.outputs[-1, 0] if membrane else em.logits[0]).double().numpy()
        got = got.reshape(expected.shape)
        diff = float(np.abs(got - expected).max())
        summary.update(
            compared=f"{qp.stages[-1].readout.nir_type} readout membrane at the last step"
            if membrane
            else "readout logits (mean over T) of one input",
            one_image_logits_netx=got.tolist(),
            one_image_logits_emulator=expected.tolist(),
            max_abs_difference=diff,
        )
        if diff > 1e-6:
            raise NallnError(
                f"the netx network disagrees with the fixed-point plan (max logit difference "
                f"{diff:.3g})"
            )
        return summary
    # a spiking output: check on the input (of the first 8) with the most output spikes, so the
    # comparison is not vacuous when some inputs leave the output silent
    many = emulate(qp, x[:8]).trace.outputs  # [T, N, K]
    pick = int(many.sum((0, 2)).argmax())
    got = run_netx(path, qp, x[pick : pick + 1])
    want = many[:, pick].double().numpy()
    got = got.reshape(want.shape)
    mismatches = int((got != want).sum())
    summary.update(
        compared=f"output spikes of input {pick}, every step and neuron",
        output_spikes_netx=int(got.sum()),
        output_spikes_emulator=int(want.sum()),
        spike_mismatches=mismatches,
        max_abs_difference=float(np.abs(got - want).max()),
    )
    if mismatches:
        raise NallnError(
            f"the netx network disagrees with the fixed-point plan ({mismatches} of "
            f"{want.size} output spikes differ)"
        )
    return summary


def describe_netx(path: str | os.PathLike) -> str:
    """netx's own layer table for the file (proves it loads)."""
    lava_compat.import_lava("lava.lib.dl.netx")
    from lava.lib.dl.netx.hdf5 import Network

    return str(Network(net_config=str(path)))
