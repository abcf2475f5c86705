"""The simulation back-ends as one type (light: the CLI imports it to list the choices)."""

from __future__ import annotations

from enum import StrEnum

DEFAULT_IMAGES = 50


class Backend(StrEnum):
    """Where ``simulate`` runs the network."""

    NORSE = "norse"  # float, Norse's modules on torch
    LAVA = "lava"  # Lava processes (float, or Loihi 2 fixed point with --fixed-point)
    LOIHI_EMULATOR = "loihi-emulator"  # nalln.loihi's bit-exact emulator, batched in torch

    @property
    def always_fixed_point(self) -> bool:
        return self is Backend.LOIHI_EMULATOR

    @property
    def has_fixed_point(self) -> bool:
        return self is not Backend.NORSE

    @property
    def default_images(self) -> int | None:
        """50 images on the slow simulators; the emulator takes the whole split."""
        return None if self is Backend.LOIHI_EMULATOR else DEFAULT_IMAGES


BACKENDS = tuple(b.value for b in Backend)
