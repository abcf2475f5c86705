"""netx HDF5 (lava-dl's network exchange format, the one Lava runs on Loihi 2) for the
NIR-native (static-SE) network, written from the calibrated fixed-point plan.

Layout read by ``lava.lib.dl.netx.hdf5.Network``: ``layer/<i>`` groups with ``type`` (input,
conv, flatten, dense), ``shape`` (C, H, W order; netx reverses it), integer ``weight`` in torch
layout (netx flips and transposes conv kernels itself), ``bias`` (the neuron's ``bias_mant``,
which netx shifts by 6 like our fixed point) and a ``neuron`` group (CUBA: ``iDecay`` = du + 1,
``vDecay`` = dv, ``vThMant``). netx has no pooling layer: the head's global average pooling is
already folded into the dense layer after it. The readout layer gets a non-spiking integrator
(``vDecay = 0``, threshold above any reachable voltage): its voltage after the window is
``64 * sum_t (a_t + bias)``, from which :func:`read_logits` recovers the mean logits.

Run it with ``Network(path, input_message_bits=24, reset_interval=T, reset_offset=1)``: netx
gives layer ``i`` the reset offset ``2 + i``, exactly the window start of our process graph.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch

from nalln.conversion import lava_compat
from nalln.errors import NallnError
from nalln.loihi.arithmetic import VTH_MAX
from nalln.loihi.quant_plan import QuantPlan


def _type(group: h5py.Group, name: str) -> None:
    group.create_dataset("type", (1,), "S10", [name.encode("ascii")])


def _neuron(group: h5py.Group, dv: int, vth: int) -> None:
    n = group.create_group("neuron")
    _type(n, "CUBA")
    n.create_dataset("iDecay", data=4096)
    n.create_dataset("vDecay", data=int(dv))
    n.create_dataset("vThMant", data=int(vth))
    n.create_dataset("refDelay", data=1)
    n.create_dataset("gradedSpike", data=False)


def write_netx(qp: QuantPlan, path: str | os.PathLike) -> Path:
    """Write the static fixed-point plan as a netx ``.net`` file (atomically)."""
    if any(q.gate is not None for q in qp.stages):
        raise NallnError(
            "netx cannot hold the SE side-car (hybrid mode); export with --se static for netx"
        )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            layers = f.create_group("layer")
            i = 0
            g = layers.create_group(str(i))
            _type(g, "input")
            g.create_dataset("shape", data=np.array(qp.plan.input_shape))
            prev_dims = len(qp.plan.input_shape)
            for q in qp.stages:
                if q.kind == "dense" and prev_dims == 3:
                    i += 1
                    g = layers.create_group(str(i))
                    _type(g, "flatten")
                    g.create_dataset("shape", data=np.array([int(np.prod(q.in_shape))]))
                i += 1
                g = layers.create_group(str(i))
                _type(g, q.kind)
                g.create_dataset("shape", data=np.array(q.out_shape))
                g.create_dataset("weight", data=q.weight.astype(np.int32))
                g.create_dataset("bias", data=q.bias.astype(np.int32))
                if q.kind == "conv":
                    g.create_dataset("stride", data=np.array(q.stride))
                    g.create_dataset("padding", data=np.array(q.padding))
                    g.create_dataset("dilation", data=np.array([1, 1]))
                    g.create_dataset("groups", data=int(q.groups))
                if q.neuron is None:
                    _neuron(g, 0, VTH_MAX)  # integrator for the readout
                else:
                    _neuron(g, q.dv, q.vth)
                prev_dims = len(q.out_shape)
            f.attrs["nalln"] = (
                f"NeurALLNet static-SE fixed point; T={qp.plan.num_steps}; input = round(x * "
                f"{qp.input_scale!r}) as 24-bit graded spikes; readout v / (64 * scale * T)"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def run_netx(path: str | os.PathLike, qp: QuantPlan, x: torch.Tensor) -> np.ndarray:
    """Load ``path`` with ``lava.lib.dl.netx.hdf5.Network`` and run one image ``x`` [1, C, H, W]
    in Lava (fixed point); returns the mean logits read from the readout integrator."""
    lava_compat.import_lava("lava.lib.dl.netx")
    from lava.lib.dl.netx.hdf5 import Network
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    from nalln.conversion.lava_processes.processes import FrameSource, conv_model_map

    T = qp.plan.num_steps
    net = Network(net_config=str(path), input_message_bits=24, reset_interval=T, reset_offset=1)
    frame = np.rint(x.double().numpy()[0].transpose(2, 1, 0) * qp.input_scale)
    frame = np.clip(frame, -(2**23 - 1), 2**23 - 1).astype(np.int32)
    src = FrameSource(frames=frame[None], steps_per_frame=T)
    src.s_out.connect(net.inp)
    readout = net.layers[-1].neuron
    depth = len(qp.stages) - 1
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=conv_model_map(True))
    try:
        src.run(condition=RunSteps(num_steps=depth + T + 1), run_cfg=cfg)
        v = np.asarray(readout.v.get(), dtype=np.float64)
    finally:
        src.stop()
    q = qp.stages[-1]
    return v / (64.0 * q.scale * T)


def describe_netx(path: str | os.PathLike) -> str:
    """netx's own layer table for the file (proves it loads)."""
    lava_compat.import_lava("lava.lib.dl.netx")
    from lava.lib.dl.netx.hdf5 import Network

    return str(Network(net_config=str(path)))
