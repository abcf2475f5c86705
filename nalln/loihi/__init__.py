"""Loihi 2 fixed point, in one place: the chip's integer arithmetic, the bit-exact emulator,
calibration, the exact grid that fine-tuning trains on, and the fake-quantisers.

=====================  ==========================================================
``arithmetic``         the registers and the integer LIF, as Lava's bit-accurate models compute
``quant_plan``         a plan on the integer grid (each quantised stage wraps its float stage)
``emulator``           the whole quantised plan, batched, spike for spike as Lava
``calibration``        per-layer calibration of a float plan (no retraining)
``grid``               the exact grid a fine-tuned checkpoint records, and its checks
``fake_quant``         the float network on that grid, differentiable (straight-through)
=====================  ==========================================================

It imports only :mod:`nalln.ir`, :mod:`nalln.models` and the base modules; training,
conversion and runs import it.
"""
