r"""Folding a NIR ``Scale`` node (:math:`y = s \odot x`, constant ``s``) into a synapse.

Scale has no state, so it is exact algebra on the neighbouring synapse :math:`W x + b`:

* after it (on its current): :math:`s \odot (W x + b)` scales output row/channel ``o`` of ``W``
  and ``b`` by :math:`s_o`;
* before it (on its input): :math:`W (s \odot x)` scales column/input channel ``c`` of ``W``
  by :math:`s_c` (zero padding stays zero).

A conv's factors must be one per channel (constant over H and W) - a per-pixel factor is not a
convolution any more, and nalln refuses it by name.
"""

from __future__ import annotations

import numpy as np

from nalln.errors import NallnError
from nalln.ir.plan import Synapse


def per_channel(s: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``s`` broadcast to ``shape``; for a [C, H, W] map, one factor per channel [C]."""
    full = np.broadcast_to(np.asarray(s, np.float64), shape)
    if len(shape) != 3:
        return full.reshape(-1).copy()
    c = full[:, :1, :1]
    if not np.array_equal(full, np.broadcast_to(c, shape)):
        raise NallnError(
            f"Scale node {name!r} on a [C, H, W] map has factors that vary over H and W; only "
            "one factor per channel folds into a convolution"
        )
    return c.reshape(-1).copy()


def scale_outputs(syn: Synapse, s: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Weight and bias of ``syn`` followed by Scale ``s``."""
    shape = tuple(syn.out_shape)
    if syn.kind == "conv" and len(shape) == 2:  # a Conv1d's [C, L']: one factor per channel
        s = np.broadcast_to(np.asarray(s, np.float64), shape).reshape(syn.out_image)
        shape = syn.out_image
    f = per_channel(s, shape, name)
    w = syn.weight * f.reshape(-1, *([1] * (syn.weight.ndim - 1)))
    return w, syn.bias * f


def scale_inputs(
    w: np.ndarray, kind: str, groups: int, s: np.ndarray, in_shape: tuple[int, ...], name: str
) -> np.ndarray:
    """Weight of a synapse (``kind`` conv/dense) whose input was scaled by ``s``."""
    if kind == "dense":
        full = np.broadcast_to(np.asarray(s, np.float64), in_shape).reshape(-1)
        return w * full[None, :]
    f = per_channel(s, in_shape, name)
    co, cig = w.shape[0], w.shape[1]
    group = np.arange(co)[:, None] // (co // groups)
    idx = group * cig + np.arange(cig)[None, :]  # input channel of weight[o, j]
    return w * f[idx][:, :, None, None]
