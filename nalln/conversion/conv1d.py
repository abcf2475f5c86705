r"""NIR ``Conv1d`` (weight ``[Co, Ci/g, k]``, input ``[Ci, L]``) as a height-1 ``Conv2d``.

A 1-d convolution over ``L`` is exactly a 2-d one over a ``[Ci, 1, L]`` map with kernel
``[1, k]``: the same C-order values, the same sums. Every conv back-end (the float reference,
Lava's ``Conv`` on (W, H, C) = (L, 1, C), the Loihi emulator, netx) therefore runs it as such;
Norse runs ``torch.nn.Conv1d``. Dilation ``d`` is folded into the kernel (``d - 1`` zeros
between taps, kernel ``d (k - 1) + 1``): exact, and Lava's Conv models have no dilation.
"""

from __future__ import annotations

import nir
import numpy as np

from nalln.errors import NallnError
from nalln.ir.plan import Synapse


def _int(v, what: str, name: str) -> int:
    a = np.atleast_1d(np.asarray(v)).astype(int).reshape(-1)
    if a.size != 1:
        raise NallnError(f"Conv1d node {name!r} has {what} {a.tolist()}; it needs one number")
    return int(a[0])


def _text(v) -> str | None:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.dtype.kind in "SU":
        v = v.reshape(-1)[0]
        return v.decode() if isinstance(v, bytes) else str(v)
    return v if isinstance(v, str) else None


def conv1d_padding(node: nir.Conv1d, name: str) -> int:
    """Padding on both ends: a number, ``valid`` (0) or ``same`` (stride 1, odd dilated
    kernel: torch pads an even one unevenly, which a symmetric pad cannot hold)."""
    pad = _text(node.padding)
    if pad is None:
        return _int(node.padding, "padding", name)
    if pad == "valid":
        return 0
    k = dilated_kernel(node, name)
    if _int(node.stride, "stride", name) != 1 or k % 2 == 0:
        raise NallnError(
            f"Conv1d node {name!r}: padding='same' is supported only for stride 1 and an odd "
            f"(dilated) kernel, it has stride {_int(node.stride, 'stride', name)}, kernel {k}"
        )
    return k // 2


def dilated_kernel(node: nir.Conv1d, name: str) -> int:
    return _int(node.dilation, "dilation", name) * (int(node.weight.shape[2]) - 1) + 1


def conv1d_out(node: nir.Conv1d, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape ``[Co, L']`` of a Conv1d receiving ``shape``; one line if it does not
    fit (both shapes named)."""
    w = np.asarray(node.weight)
    groups = _int(node.groups, "groups", name)
    if w.ndim != 3 or groups < 1 or w.shape[0] % groups:
        raise NallnError(
            f"Conv1d node {name!r} has weight {list(w.shape)} with groups {groups}; NIR's "
            "Conv1d weight is [C_out, C_in / groups, k] with C_out a multiple of groups"
        )
    c_in = int(w.shape[1]) * groups
    if len(shape) != 2 or shape[0] != c_in:
        raise NallnError(
            f"shapes do not chain at node {name!r} (Conv1d): it expects [{c_in}, L] "
            f"(weight {list(w.shape)}, groups {groups}) but receives {list(shape)}"
        )
    s, p = _int(node.stride, "stride", name), conv1d_padding(node, name)
    out = (shape[1] + 2 * p - dilated_kernel(node, name)) // s + 1
    if out < 1 or s < 1:
        raise NallnError(f"shapes do not chain at node {name!r}: input {list(shape)} is too small")
    return (int(w.shape[0]), out)


def conv1d_weight(node: nir.Conv1d, name: str) -> np.ndarray:
    """``[Co, Ci/g, 1, d (k - 1) + 1]``: the kernel with the dilation's zeros, as a height-1
    2-d kernel."""
    w = np.asarray(node.weight, np.float64)
    d = _int(node.dilation, "dilation", name)
    full = np.zeros((*w.shape[:2], dilated_kernel(node, name)))
    full[:, :, ::d] = w
    return full[:, :, None, :]


def conv1d_synapse(
    node: nir.Conv1d, name: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> Synapse:
    """The Conv1d as a plan synapse: a height-1 conv on NIR's ``[C, L]`` shapes."""
    w = conv1d_weight(node, name)
    bias = getattr(node, "bias", None)
    b = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, np.float64)
    return Synapse(
        "conv",
        w,
        b * np.ones(w.shape[0]),
        tuple(in_shape),
        tuple(out_shape),
        (1, _int(node.stride, "stride", name)),
        (0, conv1d_padding(node, name)),
        _int(node.groups, "groups", name),
        name,
    )
