"""How inputs drive a network over time: one value held at every step, or one value per step.

A plan's input has shape ``input_shape``; a batch is either ``[B, *input_shape]`` (direct
coding: the value is held at each of the T steps, as NeurALLNet's images are) or
``[B, T, *input_shape]`` (a value per step: events, spikes, any time series). Every back-end
asks :meth:`Drive.of` which one it got, so the two are never confused by a guess elsewhere.
"""

from __future__ import annotations

from enum import StrEnum

import torch

from nalln.errors import NallnError


class Drive(StrEnum):
    """The time structure of an input batch."""

    HELD = "held"  # [B, *input_shape]: the same value at every step
    PER_STEP = "per-step"  # [B, T, *input_shape]: one value per step

    @classmethod
    def of(cls, x: torch.Tensor, input_shape: tuple[int, ...]) -> Drive:
        """Which drive ``x`` is for a network whose input is ``input_shape``."""
        shape = tuple(int(s) for s in input_shape)
        got = tuple(x.shape)
        if got[1:] == shape:
            return cls.HELD
        if len(got) == len(shape) + 2 and got[2:] == shape:
            return cls.PER_STEP
        raise NallnError(
            f"inputs of shape {list(got)} do not fit the graph's input {list(shape)}: give "
            f"[N, {', '.join(map(str, shape))}] (held at every step) or "
            f"[N, T, {', '.join(map(str, shape))}] (a value per step)"
        )

    def steps(self, x: torch.Tensor, num_steps: int) -> int:
        """The number of steps to run: the plan's, or the inputs' own T (which must agree)."""
        if self is Drive.HELD:
            return num_steps
        if int(x.shape[1]) != num_steps:
            raise NallnError(
                f"the inputs have {int(x.shape[1])} time steps but the run uses {num_steps}; "
                "drop --steps or make them agree"
            )
        return num_steps

    def at(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """The batch's value at step ``t``: ``[B, *input_shape]``."""
        return x if self is Drive.HELD else x[:, t]

    def step_major(self, x: torch.Tensor, num_steps: int) -> torch.Tensor:
        """``[T, B, *input_shape]`` (a held input is expanded, not copied)."""
        if self is Drive.HELD:
            return x.unsqueeze(0).expand(num_steps, *x.shape)
        return x.transpose(0, 1)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """Every value that reaches the network, as ``[B or B*T, *input_shape]``."""
        return x if self is Drive.HELD else x.reshape(-1, *x.shape[2:])
