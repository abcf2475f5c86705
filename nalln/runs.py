"""The run folder: one place where a trained model and everything made from it live.

    RUN/
      config.json            full training configuration
      splits.csv             the split manifest every command reuses
      metrics.csv            per-epoch metrics; learning_curves.png
      checkpoints/best.safetensors, checkpoints/last.safetensors
      eval-<name>/           evaluation reports (metrics.json, ...)

Later stages read the run folder; nothing writes back into training outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nalln.checkpoint import Checkpoint, load_checkpoint
from nalln.data.transforms import Preprocess
from nalln.errors import CheckpointError, NallnError
from nalln.loihi.grid import FixedPointGrid, attach_gate_rounding
from nalln.models.registry import create_from_config
from nalln.run_meta import RunMeta


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def splits(self) -> Path:
        return self.path / "splits.csv"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def curves_png(self) -> Path:
        return self.path / "learning_curves.png"

    @property
    def best(self) -> Path:
        return self.path / "checkpoints" / "best.safetensors"

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / "last.safetensors"

    def exists(self) -> bool:
        return self.best.is_file() or self.last.is_file()


@dataclass
class LoadedModel:
    """A model ready for inference, with what is needed to feed it and read its output."""

    model: torch.nn.Module
    preprocess: Preprocess
    class_names: tuple[str, ...]
    run_meta: RunMeta
    checkpoint: Checkpoint
    run: RunDir | None

    @property
    def meta(self) -> dict:
        """The metadata in its stored form (``run_meta`` is the typed one)."""
        return self.run_meta.to_dict()

    @property
    def image_size(self) -> int:
        return self.run_meta.image_size

    @property
    def synthetic(self) -> bool:
        """Whether the model was trained on synthetic data."""
        return self.run_meta.synthetic


def resolve_checkpoint(path: str | Path, which: str = "best") -> tuple[Path, RunDir | None]:
    """Accept a run folder (uses ``which`` checkpoint) or a checkpoint file."""
    p = Path(path).expanduser()
    if p.is_dir():
        run = RunDir(p)
        ckpt = run.best if which == "best" else run.last
        if not ckpt.is_file():
            other = run.last if which == "best" else run.best
            if other.is_file():
                ckpt = other
            else:
                raise NallnError(
                    f"{p} is not a nalln run folder (no checkpoints/{which}.safetensors); "
                    "train one with `nalln train --data ROOT --out RUN`"
                )
        return ckpt, run
    if p.is_file():
        parent = p.parent.parent if p.parent.name == "checkpoints" else None
        return p, RunDir(parent) if parent and RunDir(parent).config.is_file() else None
    raise NallnError(f"run folder or checkpoint {p} does not exist")


def load_model(
    path: str | Path, which: str = "best", device: str | torch.device = "cpu"
) -> LoadedModel:
    """Load a checkpoint into a model in eval mode; the architecture comes from the checkpoint."""
    ckpt_path, run = resolve_checkpoint(path, which)
    ckpt = load_checkpoint(ckpt_path)
    meta = RunMeta.from_dict(ckpt.meta, ckpt_path)
    # the architecture comes from metadata an untrusted file may have chosen: build it on the
    # meta device first (no memory) and compare every shape with the file's tensors
    skeleton = _build(meta, ckpt_path, torch.device("meta"))
    _check_shapes(skeleton, ckpt.state_dict, ckpt_path, meta.model_name)
    model = _build(meta, ckpt_path, torch.device("cpu"))
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape mismatch"
        raise _mismatch(ckpt_path, meta.model_name, first) from None
    pre, class_names = _inference_meta(meta, model, ckpt_path)
    if meta.fixed_point_grid is not None:  # fine-tuned for Loihi fixed point: round as the chip
        try:
            attach_gate_rounding(model, FixedPointGrid.from_dict(meta.fixed_point_grid))
        except NallnError as exc:
            raise CheckpointError(f"{ckpt_path}: {exc}") from None
    model.to(device).eval()
    return LoadedModel(model, pre.to(device), class_names, meta, ckpt, run)


def _build(meta: RunMeta, ckpt_path: Path, device: torch.device) -> torch.nn.Module:
    try:
        with device:
            return create_from_config(meta.model_name, dict(meta.model_config))
    except NallnError as exc:
        raise CheckpointError(f"{ckpt_path}: {exc}") from None
    except (TypeError, ValueError, AttributeError, RuntimeError, MemoryError) as exc:
        # the metadata of an untrusted file may hold anything (docs/reliability.md)
        raise CheckpointError(
            f"{ckpt_path} names an unusable architecture ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); it was not written by `nalln train`"
        ) from None


def _check_shapes(
    skeleton: torch.nn.Module, tensors: dict[str, torch.Tensor], ckpt_path: Path, name: str
) -> None:
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in tensors.items()}
    if want == have:
        return
    missing, extra = sorted(want.keys() - have.keys()), sorted(have.keys() - want.keys())
    if missing or extra:
        first = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
    else:
        key = next(k for k in want if want[k] != have[k])
        first = f"{key}: file {list(have[key])}, architecture {list(want[key])}"
    raise _mismatch(ckpt_path, name, first)


def _mismatch(ckpt_path: Path, name: str, detail: str) -> CheckpointError:
    return CheckpointError(
        f"{ckpt_path} does not match the {name} architecture it names ({detail}); "
        "the file is from another model or was altered"
    )


def _inference_meta(
    meta: RunMeta, model: torch.nn.Module, ckpt_path: Path
) -> tuple[Preprocess, tuple[str, ...]]:
    """Normalisation and class names, checked: an untrusted file's metadata may hold anything."""
    names = list(meta.class_names)
    config = getattr(model, "config", None)
    n_classes = getattr(config, "num_classes", None)
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)) or (
        n_classes is not None and len(names) != n_classes
    ):
        raise CheckpointError(
            f"{ckpt_path}: class_names must be a list of {n_classes} names, got {names!r:.80}"
        )
    try:
        pre = Preprocess.from_meta(dict(meta.normalisation))
        channels = getattr(config, "in_channels", pre.mean.numel())
        ok = pre.mean.numel() == pre.std.numel() == channels
        ok = ok and bool(torch.isfinite(pre.mean).all() and (pre.std > 0).all())
    except (NallnError, TypeError, ValueError, KeyError, AttributeError, RuntimeError):
        ok = False
    if not ok:
        raise CheckpointError(
            f"{ckpt_path}: its normalisation metadata is malformed; it was not written by "
            "`nalln train`"
        )
    return pre, tuple(names)
