"""A per-element delay line between a population (or the input) and a synapse, windowed.

Import only through :mod:`nalln.conversion.lava_backend` (it needs the Lava shim). It serves
two needs of a graph with branches and merges (:mod:`nalln.conversion.lava_backend`): a NIR
``Delay`` (element ``i`` read ``d_i`` steps late) and the alignment of a merge of paths of
different depth (every Conv/Dense adds one Lava step, so a short path's spikes are held ``A``
steps). Images stream back to back, one every ``T`` steps, so a delayed value that belongs to
the previous image is sent as zero (NIR's delay line starts empty for each input).
"""

from __future__ import annotations

import numpy as np

from nalln.conversion import lava_compat

lava_compat.import_lava()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402


class WindowedDelay(AbstractProcess):
    r"""Sends on Lava step ``L`` element ``i`` of what it received on step ``L - align -
    delays[i]`` (received and sent in the same step when that is 0), or 0 when that value
    belongs to another input's window: with ``g = L - align - first`` (the image time of the
    synapse it feeds, over all images) and ``g_i = g - delays[i]``, it sends 0 unless
    ``g_i >= 0`` and ``g_i // T == g // T``. ``first``: the step on which the source's value
    of image 0, step 0 arrives."""

    def __init__(
        self, *, shape: tuple[int, ...], delays: np.ndarray, align: int, first: int, period: int
    ) -> None:
        super().__init__(
            shape=shape,
            delays=np.asarray(delays, np.int64),
            align=int(align),
            first=int(first),
            period=int(period),
            name="delay",
        )
        self.a_in = InPort(shape=shape)
        self.a_out = OutPort(shape=shape)


class _WindowedDelayBase(PyLoihiProcessModel):
    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        shape = tuple(proc_params["shape"])
        self.delays = np.broadcast_to(np.asarray(proc_params["delays"], np.int64), shape)
        self.align = int(proc_params["align"])
        self.first = int(proc_params["first"])
        self.period = int(proc_params["period"])
        self.depth = int(self.delays.max(initial=0)) + self.align + 1
        self.ring = np.zeros((self.depth, *shape), np.float64)

    def run_spk(self) -> None:
        step = self.time_step
        self.ring[step % self.depth] = self.a_in.recv()
        back = self.align + self.delays  # per element, steps back
        g = step - self.align - self.first
        gi = g - self.delays
        keep = (gi >= 0) & (gi // self.period == g // self.period) & (g >= 0)
        picked = np.take_along_axis(self.ring, ((step - back) % self.depth)[None], 0)[0]
        self.a_out.send(np.where(keep, picked, 0).astype(self.out_dtype))


@implements(proc=WindowedDelay, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyWindowedDelayFloat(_WindowedDelayBase):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    out_dtype = np.float64


@implements(proc=WindowedDelay, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyWindowedDelayFixed(_WindowedDelayBase):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    out_dtype = np.int32
