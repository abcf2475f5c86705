"""Our own Lava processes: the image source, a spike/current recorder, the SE-gate side-car and a
LIF with a producer's semantics (``ProgrammableLIF``: subtracting resets, graded spike counts,
a membrane floor).

Import this module only through :mod:`nalln.conversion.lava_backend` (it needs the Lava shim).
Every process has a float model (tag ``floating_pt``) and a fixed-point model (tag ``fixed_pt``)
so that one process graph runs under ``Loihi2SimCfg(select_tag=...)`` in either mode. The models
use numpy only: Lava forks one OS process per model, and torch's thread pools are not fork-safe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nalln.conversion import lava_compat
from nalln.ir.se_gate import se_gate_numpy

lava_compat.import_lava()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402


class FrameSource(AbstractProcess):
    """Direct coding: frame ``j`` (graded values, Lava (W, H, C) layout) is sent on steps
    ``j*T + 1 ... j*T + T``; zeros after the last frame."""

    def __init__(self, *, frames: np.ndarray, steps_per_frame: int, name: str = "source") -> None:
        super().__init__(frames=frames, steps_per_frame=steps_per_frame, name=name)
        self.s_out = OutPort(shape=tuple(frames.shape[1:]))


class _FrameSourceBase(PyLoihiProcessModel):
    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.frames = proc_params["frames"]
        self.steps = int(proc_params["steps_per_frame"])

    def run_spk(self) -> None:
        j = (self.time_step - 1) // self.steps
        if j < len(self.frames):
            self.s_out.send(self.frames[j])
        else:
            self.s_out.send(np.zeros(self.frames.shape[1:], self.frames.dtype))


@implements(proc=FrameSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyFrameSourceFloat(_FrameSourceBase):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)


@implements(proc=FrameSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyFrameSourceFixed(_FrameSourceBase):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)


class Recorder(AbstractProcess):
    """Keeps what arrives on steps ``first_step ... first_step + n_steps - 1`` and saves it to
    ``path`` (``.npy``) on the last of them.

    Reading a large Var back through the Lava runtime costs ~40 us per element; writing one file
    from inside the process costs milliseconds, so every layer can be recorded in full.
    """

    def __init__(
        self,
        *,
        shape: tuple[int, ...],
        first_step: int,
        n_steps: int,
        path: str,
        binary: bool,
        name: str = "recorder",
    ) -> None:
        super().__init__(
            shape=shape,
            first_step=first_step,
            n_steps=n_steps,
            path=path,
            binary=binary,
            name=name,
        )
        self.a_in = InPort(shape=shape)


class _RecorderBase(PyLoihiProcessModel):
    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.first = int(proc_params["first_step"])
        self.n = int(proc_params["n_steps"])
        self.path = Path(proc_params["path"])
        self.binary = bool(proc_params["binary"])
        shape = tuple(proc_params["shape"])
        self.buf = np.zeros((self.n, *shape), bool if self.binary else np.float64)

    def run_spk(self) -> None:
        data = self.a_in.recv()
        k = self.time_step - self.first
        if 0 <= k < self.n:
            self.buf[k] = data != 0 if self.binary else data
            if k == self.n - 1:
                out = np.packbits(self.buf.reshape(self.n, -1), axis=1) if self.binary else self.buf
                np.save(self.path, out)


@implements(proc=Recorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyRecorderFloat(_RecorderBase):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)


@implements(proc=Recorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyRecorderFixed(_RecorderBase):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)


class SEGate(AbstractProcess):
    r"""Squeeze-and-Excitation on the current of one layer, per time step (hybrid mode).

    .. math::
        x = a + b, \quad g = \sigma(W_2\,\mathrm{relu}(W_1\,\overline{x}_{hw} + b_1) + b_2),
        \quad y = x \odot g

    ``a`` arrives in Lava (W, H, C) layout; ``b`` is the layer's (BN-folded) bias, added here
    because the gate must see it. In fixed point, ``a``, ``b`` and ``y`` are integers in the
    layer's scale ``scale`` (current = integer / scale); the gate itself is computed in float,
    as the embedded CPU of a neuromorphic chip would (docs/conversion.md). In float mode,
    ``current_scale`` > 0 (a model fine-tuned for hybrid fixed point) rounds ``y`` to that grid
    as the fixed-point side-car does.
    """

    def __init__(
        self,
        *,
        shape: tuple[int, int, int],
        bias: np.ndarray,
        w1: np.ndarray,
        b1: np.ndarray,
        w2: np.ndarray,
        b2: np.ndarray,
        scale: float = 1.0,
        current_scale: float = 0.0,
        name: str = "se_gate",
    ) -> None:
        super().__init__(
            shape=shape,
            bias=bias,
            w1=w1,
            b1=b1,
            w2=w2,
            b2=b2,
            scale=scale,
            current_scale=current_scale,
            name=name,
        )
        self.a_in = InPort(shape=shape)
        self.a_out = OutPort(shape=shape)


class _SEGateBase(PyLoihiProcessModel):
    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        p = proc_params
        self.bias = np.asarray(p["bias"], np.float64)
        self.w1, self.b1 = np.asarray(p["w1"], np.float64), np.asarray(p["b1"], np.float64)
        self.w2, self.b2 = np.asarray(p["w2"], np.float64), np.asarray(p["b2"], np.float64)
        self.scale = float(p["scale"])
        self.current_scale = float(p["current_scale"])  # 0: no rounding (float mode)


@implements(proc=SEGate, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySEGateFloat(_SEGateBase):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)

    def run_spk(self) -> None:
        x = self.a_in.recv() + self.bias
        y = x * se_gate_numpy(x, self.w1, self.b1, self.w2, self.b2)
        if self.current_scale > 0:  # a model fine-tuned for hybrid fixed point (float run)
            y = np.rint(y * self.current_scale) / self.current_scale
        self.a_out.send(y)


@implements(proc=SEGate, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySEGateFixed(_SEGateBase):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def run_spk(self) -> None:
        x = self.a_in.recv().astype(np.int64) + self.bias.astype(np.int64)
        g = se_gate_numpy(x / self.scale, self.w1, self.b1, self.w2, self.b2)
        self.a_out.send(np.rint(x * g).astype(np.int32))


# --- Lava's LIFReset with a producer's semantics (Loihi 2's programmable neuron) ----------------
from lava.proc.lif.models import AbstractPyLifModelFixed, AbstractPyLifModelFloat  # noqa: E402
from lava.proc.lif.process import LIFReset  # noqa: E402

RESETS = ("zero", "subtract", "subtract-undecayed")  # nalln.ir.semantics.ResetRule's values


class ProgrammableLIF(LIFReset):
    """Lava's ``LIFReset`` (same state, same reset every ``reset_interval`` steps, same
    sub-threshold dynamics) with the producer's semantics as parameters
    (:mod:`nalln.ir.semantics`; on Loihi 2 a microcode neuron, docs/conversion.md):

    * ``reset``: ``zero`` (``v <- 0`` where it spiked), ``subtract`` (``v <- v - z vth``) or
      ``subtract-undecayed`` (``z vth`` subtracted the next step, after its decay, with the
      bias: snnTorch's subtraction);
    * ``multi``: the spike is graded, the count ``z = floor(v / vth)`` where ``v > 0`` (the
      next Dense/Conv needs ``num_message_bits > 0`` to weigh it); else ``z = [v > vth]``;
    * ``v_min``: after the reset ``v <- max(v, v_min)`` (fixed point: ``v_min << 6``, the
      threshold's exponent); ``None``: no floor.
    """

    def __init__(
        self, *, reset: str = "zero", multi: bool = False, v_min: float | None = None, **kwargs
    ) -> None:
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, not {reset!r}")
        super().__init__(**kwargs)
        self.proc_params["reset"] = str(reset)
        self.proc_params["multi"] = bool(multi)
        self.proc_params["v_min"] = v_min


class _ProgrammableLIF:
    """What both models share: the window reset (``u``, ``v`` and what an undecayed subtraction
    owes), the spike, the reset and the floor."""

    def _init_rules(self, proc_params, floor_shift: int) -> None:
        self.reset_interval = proc_params["reset_interval"]
        self.reset_offset = proc_params["reset_offset"] % self.reset_interval
        self.rule = proc_params["reset"]
        self.multi = bool(proc_params["multi"])
        v_min = proc_params["v_min"]
        self.floor = None if v_min is None else self._scalar(v_min) * 2**floor_shift
        self.owed = 0

    def _fire(self, th) -> np.ndarray:
        v = self.v
        z = np.where(v > 0, v // th, 0).astype(v.dtype) if self.multi else v > th
        if self.rule == "zero":
            v[z > 0] = 0
        elif self.rule == "subtract":
            v -= z * th
        else:
            self.owed = z * th
        if self.floor is not None:
            np.maximum(v, self.floor, out=v)
        return z

    def _window(self) -> None:
        if (self.time_step % self.reset_interval) == self.reset_offset:
            self.u *= 0
            self.v *= 0
            self.owed = 0


@implements(proc=ProgrammableLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyProgrammableLIFFloat(_ProgrammableLIF, AbstractPyLifModelFloat):
    """Float: ``v = (1 - dv) v + u + bias - owed``, then :meth:`_fire` at ``vth``."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    vth: float = LavaPyType(float, float)
    _scalar = float

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._init_rules(proc_params, 0)

    def run_spk(self) -> None:
        a_in_data = self.a_in.recv()
        self._window()
        self.subthr_dynamics(activation_in=a_in_data)
        self.v -= self.owed
        self.s_out.send(self._fire(self.vth).astype(float))


@implements(proc=ProgrammableLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyProgrammableLIFFixed(_ProgrammableLIF, AbstractPyLifModelFixed):
    """Lava's bit-accurate ``LIFReset`` arithmetic (24-bit wrap of ``u``, 24-bit saturation of
    ``v``) with the owed subtraction in the bias, so ``v = clip(trunc(v (4096 - dv) / 4096) + u +
    (bias << 6) - owed)``, then :meth:`_fire` at ``vth << 6``; a count is sent as a 24-bit
    graded spike. Bit-exact with ``nalln.loihi.arithmetic.lif_integer``."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: int = LavaPyType(int, np.int32, precision=17)
    _scalar = int

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._init_rules(proc_params, self.vth_shift)
        self.effective_vth = 0

    def scale_threshold(self) -> None:
        self.effective_vth = np.left_shift(self.vth, self.vth_shift)
        self.isthrscaled = True

    def run_spk(self) -> None:
        a_in_data = self.a_in.recv()
        self._window()
        self.scale_bias()
        self.effective_bias = self.effective_bias - self.owed
        if not self.isthrscaled:
            self.scale_threshold()
        self.subthr_dynamics(activation_in=a_in_data)
        self.s_out.send(self._fire(self.effective_vth).astype(np.int32))


# --- An LI / Integrator readout: Lava's LIFReset whose membrane is its output ---------------------
# Lava's decorators refuse a subclass of a model that already implements a process, so these
# are Lava's PyLifResetModelFloat / PyLifResetModelBitAcc (lava 0.10) on the same abstract bases,
# their run_spk copied unchanged, plus one line: the membrane goes out on v_out.
from lava.proc.lif.models import AbstractPyLifModelFixed  # noqa: E402


class LIReadout(LIFReset):
    """A NIR LI (``dv = dt/tau``) or Integrator (``dv = 0``) readout: Lava's ``LIFReset`` with no
    current memory (``du`` = 1, fixed point 4095) and a threshold it never reaches (float: inf;
    fixed point: the 17-bit maximum, the emulator counts a crossing as overflow), which sends
    its membrane ``v`` on ``v_out`` every step, after Lava's own update."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.v_out = OutPort(shape=tuple(kwargs["shape"]))


class _MembraneOut:
    """Lava's ``LIFReset`` step (window reset, dynamics, spike, reset to 0), then ``v_out``."""

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.reset_interval = proc_params["reset_interval"]
        self.reset_offset = (proc_params["reset_offset"]) % self.reset_interval

    def scale(self) -> None:  # what the bit-accurate model does before its dynamics
        """Nothing in float."""

    def run_spk(self) -> None:
        a_in_data = self.a_in.recv()
        if (self.time_step % self.reset_interval) == self.reset_offset:
            self.u *= 0
            self.v *= 0
        self.scale()
        self.subthr_dynamics(activation_in=a_in_data)
        s_out = self.spiking_activation()
        self.reset_voltage(spike_vector=s_out)
        self.s_out.send(s_out)
        self.v_out.send(self.v)


@implements(proc=LIReadout, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLIReadoutFloat(_MembraneOut, AbstractPyLifModelFloat):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    vth: float = LavaPyType(float, float)

    def spiking_activation(self) -> np.ndarray:
        return self.v > self.vth


@implements(proc=LIReadout, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyLIReadoutFixed(_MembraneOut, AbstractPyLifModelFixed):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: int = LavaPyType(int, np.int32, precision=17)

    def scale(self) -> None:
        self.scale_bias()
        if not self.isthrscaled:
            self.effective_vth = np.left_shift(self.vth, self.vth_shift)
            self.isthrscaled = True

    def spiking_activation(self) -> np.ndarray:
        return self.v > self.effective_vth


# --- On-chip SE (SEMode.ONCHIP): the graded neurons of the gate branch -------------------------
# Integer semantics: nalln.loihi.onchip_se (module docstring). The synapses of the branch are
# Lava's own Dense processes (fc1, fc2, the broadcast of each gate to its channel's positions)
# and the product is Lava's ProdNeuron; these are the graded neurons between them and the
# delay of the main path. Fixed point only (the gate is an integer computation).


class ChannelSum(AbstractProcess):
    """C accumulator compartments: ``q[c] = (sum_hw a[w, h, c] + hw * bias[c]) >> shift``.
    Sends the previous step's ``q`` (one synapse hop, as the spike-count compartments on the
    chip: docs/conversion.md "SE on the chip")."""

    def __init__(self, *, shape: tuple[int, int, int], bias: np.ndarray, shift: int) -> None:
        super().__init__(shape=shape, bias=bias, shift=shift, name="se_sum")
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=(shape[-1],))


@implements(proc=ChannelSum, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyChannelSumFixed(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        shape = tuple(proc_params["shape"])
        self.bias = np.asarray(proc_params["bias"], np.int64) * (shape[0] * shape[1])
        self.shift = int(proc_params["shift"])
        self.buf = np.zeros(shape[-1], np.int64)

    def run_spk(self) -> None:
        self.s_out.send(self.buf.astype(np.int32))
        a = self.a_in.recv().astype(np.int64)
        self.buf = (a.sum(axis=(0, 1)) + self.bias) >> self.shift


class GradedReLU(AbstractProcess):
    """Graded ReLU neurons: ``h = max(a + bias, 0) >> shift``, sent in the same step."""

    def __init__(self, *, shape: tuple[int], bias: np.ndarray, shift: int) -> None:
        super().__init__(shape=shape, bias=bias, shift=shift, name="se_relu")
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)


@implements(proc=GradedReLU, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyGradedReLUFixed(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.bias = np.asarray(proc_params["bias"], np.int64)
        self.shift = int(proc_params["shift"])

    def run_spk(self) -> None:
        z = self.a_in.recv().astype(np.int64) + self.bias
        self.s_out.send((np.maximum(z, 0) >> self.shift).astype(np.int32))


class HardSigmoidGate(AbstractProcess):
    """Graded hard-sigmoid neurons: ``g = clip((a + bias) >> shift, 0, one)``, sent in the same
    step, except where the product neuron will apply it to one of an image's first ``lag``
    steps: there the gate of the branch at rest, ``rest``. The product neuron applies what is
    sent at Lava step ``tau`` at step ``tau + 1``, to image step ``(tau + phase) mod period``."""

    def __init__(
        self,
        *,
        shape: tuple[int],
        bias: np.ndarray,
        shift: int,
        one: int,
        rest: np.ndarray,
        period: int,
        phase: int,
        lag: int,
    ) -> None:
        super().__init__(
            shape=shape,
            bias=bias,
            shift=shift,
            one=one,
            rest=rest,
            period=period,
            phase=phase,
            lag=lag,
            name="se_sigmoid",
        )
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)


@implements(proc=HardSigmoidGate, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyHardSigmoidGateFixed(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        p = proc_params
        self.bias = np.asarray(p["bias"], np.int64)
        self.rest = np.asarray(p["rest"], np.int64)
        self.shift, self.one = int(p["shift"]), int(p["one"])
        # not ``self.phase``: PyLoihiProcessModel uses that name for its protocol phase
        self.period, self.offset, self.lag = int(p["period"]), int(p["phase"]), int(p["lag"])

    def run_spk(self) -> None:
        z = self.a_in.recv().astype(np.int64) + self.bias
        g = np.clip(z >> self.shift, 0, self.one)
        if (self.time_step + self.offset) % self.period < self.lag:
            g = self.rest
        self.s_out.send(g.astype(np.int32))


class CurrentDelay(AbstractProcess):
    """The main path of a gated layer: the current plus the layer's bias, ``delay`` steps late
    (Loihi 2's synaptic delay on the pointwise synapses; 0: sent in the same step)."""

    def __init__(self, *, shape: tuple[int, int, int], bias: np.ndarray, delay: int) -> None:
        super().__init__(shape=shape, bias=bias, delay=delay, name="se_delay")
        self.a_in = InPort(shape=shape)
        self.a_out = OutPort(shape=shape)


@implements(proc=CurrentDelay, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyCurrentDelayFixed(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        shape = tuple(proc_params["shape"])
        self.bias = np.broadcast_to(np.asarray(proc_params["bias"], np.int64), shape)
        self.fifo = [np.zeros(shape, np.int64) for _ in range(int(proc_params["delay"]))]

    def run_spk(self) -> None:
        self.fifo.append(self.a_in.recv().astype(np.int64) + self.bias)
        self.a_out.send(self.fifo.pop(0).astype(np.int32))


# --- Lava's Conv, with a working ``groups`` and a vectorised convolution ------------------------
# lava.proc.conv.models declares ``groups`` as an int8 Var, so a depthwise convolution with 128 or
# more channels wraps to a negative group count and computes garbage (measured: max error 10.7 on
# a 128-channel depthwise conv, 0 at 64 channels). Its convolution also loops over every
# (output, input) channel pair calling scipy's convolve2d (~0.4 s per step for one 32->64
# pointwise conv at 112x112). These models are Lava's own with the Var widened and the same
# convolution computed by one numpy contraction (:func:`conv_whc`, checked against Lava's
# ``conv_scipy`` in the tests); the run configuration maps Lava's Conv process to them.
from lava.proc.conv.models import PyConvModelFixed, PyConvModelFloat  # noqa: E402
from lava.proc.conv.process import Conv  # noqa: E402


def conv_whc(
    x: np.ndarray,
    weight: np.ndarray,
    stride: tuple[int, int],
    padding: tuple[int, int],
    groups: int,
) -> np.ndarray:
    """Lava's convolution: ``x`` (W, H, C_in), ``weight`` (C_out, kW, kH, C_in/groups) used as a
    true (flipped) convolution kernel, stride/padding in (W, H) order; float64 result."""
    kern = np.asarray(weight, np.float64)[:, ::-1, ::-1, :]
    xp = np.pad(np.asarray(x, np.float64), ((padding[0],) * 2, (padding[1],) * 2, (0, 0)))
    k_w, k_h = kern.shape[1:3]
    win = np.lib.stride_tricks.sliding_window_view(xp, (k_w, k_h), axis=(0, 1))
    win = win[:: stride[0], :: stride[1]]  # (W', H', C_in, kW, kH)
    w_out, h_out, c_in = win.shape[:3]
    c_out = kern.shape[0]
    g = int(groups)
    win = win.reshape(w_out, h_out, g, c_in // g, k_w, k_h)
    kern = kern.reshape(g, c_out // g, k_w, k_h, c_in // g)
    out = np.einsum("xygcij,gkijc->xygk", win, kern, optimize=True)
    return out.reshape(w_out, h_out, c_out)


class _FastConv:
    def run_spk(self) -> None:
        if self.a_buf is None:
            self.a_buf = np.zeros_like(self.a_out.shape)
        self.a_out.send(self.a_buf)
        s_in = self.s_in.recv()
        if self.num_message_bits.item() == 0:
            s_in = s_in.astype(bool)
        out = conv_whc(s_in, self.weight, self.stride, self.padding, int(self.groups[0]))
        if np.issubdtype(self.weight.dtype, np.integer):
            out = np.rint(out)
        self.a_buf = self.clamp_precision(out.astype(self.weight.dtype))


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyConvModelFloatNalln(_FastConv, PyConvModelFloat):
    groups: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=16)


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyConvModelFixedNalln(_FastConv, PyConvModelFixed):
    groups: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=16)


# --- Lava's Dense as a neuron's loop (s_out -> a_in), cleared at each input window ---------------
# Lava's Dense sends, on step t, what it computed from the spikes of step t - 1: exactly NIR's
# one-step delay on a cycle. But nalln streams inputs back to back through one network, and the
# spikes of an input's last step would arrive on the next input's first step (the step LIFReset
# zeroes u and v, before it adds a_in). This Dense, Lava's own models otherwise, sends nothing on
# that step, so each input starts from rest as NIR (and the reference: nothing arrives at step 0)
# has it.
from lava.proc.dense.models import (  # noqa: E402
    AbstractPyDenseModelBitAcc,
    AbstractPyDenseModelFloat,
)
from lava.proc.dense.process import Dense  # noqa: E402


class RecurrentDense(Dense):
    """Lava's ``Dense`` from a neuron's ``s_out`` back into its ``a_in``; on steps with
    ``time_step % reset_interval == reset_offset`` (the neuron's window start) it sends zeros."""

    def __init__(
        self, *, weights: np.ndarray, reset_interval: int, reset_offset: int, weight_exp: int = 0
    ) -> None:
        super().__init__(
            weights=weights,
            num_message_bits=0,
            weight_exp=int(weight_exp),
            reset_interval=int(reset_interval),
            reset_offset=int(reset_offset) % int(reset_interval),
            name="recurrent_dense",
        )


class _WindowedDense:
    def run_spk(self) -> None:
        p = self.proc_params
        if self.time_step % p["reset_interval"] == p["reset_offset"]:
            self.a_buff = np.zeros_like(self.a_buff)  # the previous input's last spikes
        super().run_spk()


@implements(proc=RecurrentDense, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyRecurrentDenseFloat(_WindowedDense, AbstractPyDenseModelFloat):
    pass


@implements(proc=RecurrentDense, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyRecurrentDenseFixed(_WindowedDense, AbstractPyDenseModelBitAcc):
    pass


def conv_model_map(fixed_point: bool) -> dict:
    """``exception_proc_model_map`` entries that route every Lava Conv to the models above, and
    our recurrent Dense to its models."""
    if fixed_point:
        return {Conv: PyConvModelFixedNalln, RecurrentDense: PyRecurrentDenseFixed}
    return {Conv: PyConvModelFloatNalln, RecurrentDense: PyRecurrentDenseFloat}
