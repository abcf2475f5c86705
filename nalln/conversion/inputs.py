"""``--inputs X.npz``: the values a NIR graph is run on, read and checked before any work.

``X.npz`` (``numpy.savez``) holds ``x``, float32, ``[N, *input]`` (held at every step, direct
coding) or ``[N, T, *input]`` (a value per step: events, spikes, a time series), where
``input`` is the graph's Input shape (any channel count); optionally ``y``, integer labels
``[N]`` (then accuracy is reported), and ``classes``, their names. Nothing is rescaled: the
values enter the graph as they are. Every problem is one line naming the key and what to do.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nalln.errors import NallnError
from nalln.ir.drive import Drive

MAX_INPUT_BYTES = 2 * 2**30  # x as float32 in memory


@dataclass(frozen=True)
class Inputs:
    """Checked inputs: ``x`` as float32 and, if given, labels and class names."""

    x: torch.Tensor
    drive: Drive
    y: torch.Tensor | None = None
    classes: tuple[str, ...] | None = None
    path: Path | None = None

    @property
    def steps(self) -> int | None:
        """T of per-step inputs; ``None`` for held ones."""
        return int(self.x.shape[1]) if self.drive is Drive.PER_STEP else None

    def first(self, n: int) -> Inputs:
        """The first ``n`` inputs (and labels)."""
        y = None if self.y is None else self.y[:n]
        return Inputs(self.x[:n], self.drive, y, self.classes, self.path)


def _open(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise NallnError(f"--inputs {path} does not exist; give an .npz file holding `x`")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not named arrays")
        with loaded as f:
            keys = set(f.files)
            if "x" not in keys:
                has = ", ".join(sorted(keys)) or "none"
                raise NallnError(
                    f"--inputs {path} has no array `x` (it has: {has}); save the inputs with "
                    "numpy.savez(path, x=..., y=...)"
                )
            declared = _declared_bytes(f, "x")
            if declared > MAX_INPUT_BYTES:
                raise NallnError(
                    f"--inputs {path}: `x` would take {declared / 2**30:.1f} GiB; split it into "
                    f"files under {MAX_INPUT_BYTES / 2**30:.0f} GiB"
                )
            return {k: f[k] for k in ("x", "y", "classes") if k in keys}
    except NallnError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise NallnError(
            f"--inputs {path} is not a readable .npz file ({str(exc).splitlines()[0][:120]}); "
            "write it with numpy.savez(path, x=..., y=...)"
        ) from None


def _declared_bytes(f: np.lib.npyio.NpzFile, key: str) -> int:
    """Bytes the array ``key`` declares in its header (read before the data)."""
    fmt = np.lib.format
    with f.zip.open(f"{key}.npy") as fh:
        version = fmt.read_magic(fh)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(fh)
    return int(np.prod(shape, dtype=np.float64)) * max(np.dtype(dtype).itemsize, 4)


def _labels(y: np.ndarray, n: int, path: Path) -> torch.Tensor:
    if y.dtype.kind not in "iu" or y.shape != (n,):
        raise NallnError(
            f"--inputs {path}: `y` must hold {n} integer labels (shape [{n}]); it is "
            f"{y.dtype} {list(y.shape)}"
        )
    if n and int(y.min()) < 0:
        raise NallnError(f"--inputs {path}: `y` has negative labels (min {int(y.min())})")
    return torch.from_numpy(y.astype(np.int64))


def _classes(c: np.ndarray, y: torch.Tensor | None, path: Path) -> tuple[str, ...]:
    if c.dtype.kind not in "US" or c.ndim != 1:
        raise NallnError(f"--inputs {path}: `classes` must be a 1-d array of names")
    names = tuple(str(v.decode() if isinstance(v, bytes) else v) for v in c.tolist())
    if y is not None and len(y) and int(y.max()) >= len(names):
        raise NallnError(
            f"--inputs {path}: label {int(y.max())} has no name (`classes` lists {len(names)})"
        )
    return names


def load_inputs(path: str | Path, input_shape: tuple[int, ...]) -> Inputs:
    """Read ``path`` and check it against the graph's input shape (see the module docstring)."""
    p = Path(path).expanduser()
    arrays = _open(p)
    x = arrays["x"]
    if x.dtype != np.float32:
        raise NallnError(
            f"--inputs {p}: `x` is {x.dtype}; nalln reads float32 (save x.astype(numpy.float32))"
        )
    if x.ndim == 0 or x.shape[0] < 1:
        raise NallnError(f"--inputs {p}: `x` holds no inputs (shape {list(x.shape)})")
    tensor = torch.from_numpy(np.ascontiguousarray(x))
    try:
        drive = Drive.of(tensor, input_shape)
    except NallnError as exc:
        raise NallnError(f"--inputs {p}: {exc}") from None
    bad = ~np.isfinite(x)
    if bad.any():
        first = np.argwhere(bad)[0].tolist()
        raise NallnError(
            f"--inputs {p}: `x` has {int(bad.sum())} NaN or infinite values (first at index "
            f"{first}); replace them before simulating"
        )
    if drive is Drive.PER_STEP and x.shape[1] < 1:
        raise NallnError(f"--inputs {p}: `x` has 0 time steps")
    y = _labels(arrays["y"], int(x.shape[0]), p) if "y" in arrays else None
    classes = _classes(arrays["classes"], y, p) if "classes" in arrays else None
    return Inputs(tensor, drive, y, classes, p)


def steps_for(inputs: Inputs | None, steps: int | None) -> int | None:
    """T for a run: ``--steps``, or the per-step inputs' own T (they must agree)."""
    if steps is not None and steps < 1:
        raise NallnError("--steps must be at least 1")
    if inputs is None or inputs.steps is None:
        return steps
    if steps is not None and steps != inputs.steps:
        raise NallnError(
            f"--steps {steps} disagrees with the {inputs.steps} time steps of --inputs "
            f"{inputs.path}; drop --steps or make them agree"
        )
    return inputs.steps
