"""Checkpoints as safetensors files: tensors plus JSON metadata, never pickle.

Loading a pickle can execute arbitrary code, so a file in PyTorch's pickle format is refused
outright. A SHA-256 over the metadata and every tensor's bytes is stored in the header and
checked on load, so truncated or tampered files are reported instead of silently used.

Weights may be stored as int8 with one float32 scale per output channel (``qscale/<name>``,
written by ``nalln quantize``); loading dequantises them to float32 (``w = q * scale``), so every
command runs a quantised run like any other.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from nalln import __version__
from nalln.errors import CheckpointError
from nalln.io import write_bytes

FORMAT = "nalln-checkpoint"
FORMAT_VERSION = "1"
_OPT_PREFIX = "optimizer/"
_MODEL_PREFIX = "model/"
_SCALE_PREFIX = "qscale/"


@dataclass
class Checkpoint:
    """What a checkpoint holds: model weights, metadata, optionally optimizer state."""

    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]
    optimizer_state: dict[str, Any] | None = None
    path: Path | None = field(default=None, compare=False)


def _digest(meta_json: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{_OPT_PREFIX}{idx}/{key}"] = value.detach().cpu()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name[len(_OPT_PREFIX) :].split("/", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, entries in info.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entries)
    return {"state": state, "param_groups": info["param_groups"]}


def save_checkpoint(
    path: str | os.PathLike,
    state_dict: dict[str, torch.Tensor],
    meta: dict[str, Any],
    optimizer_state: dict[str, Any] | None = None,
    scales: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write atomically; ``meta`` must be JSON-serialisable.

    ``scales``: per-output-channel float scales of the int8 entries of ``state_dict``.
    """
    tensors = {f"{_MODEL_PREFIX}{k}": v.detach().cpu().contiguous() for k, v in state_dict.items()}
    for name, scale in (scales or {}).items():
        q = state_dict.get(name)
        if q is None or q.dtype != torch.int8 or scale.numel() != q.shape[0]:
            raise ValueError(f"scale for {name!r} needs an int8 tensor with {scale.numel()} rows")
        tensors[f"{_SCALE_PREFIX}{name}"] = scale.detach().float().cpu().contiguous()
    full_meta = dict(meta)
    full_meta.setdefault("nalln_version", __version__)
    if optimizer_state is not None:
        opt_tensors, opt_info = _flatten_optimizer(optimizer_state)
        tensors.update({k: v.contiguous() for k, v in opt_tensors.items()})
        full_meta["optimizer"] = opt_info
    meta_json = json.dumps(full_meta, sort_keys=True)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": meta_json,
        "sha256": _digest(meta_json, tensors),
    }
    return write_bytes(path, st_save(tensors, metadata=header))


def _looks_like_safetensors(data: bytes) -> bool:
    """8-byte little-endian header length, then a JSON object that fits in the file."""
    if len(data) < 10:
        return False
    size = int.from_bytes(data[:8], "little")
    return size >= 2 and data[8:9] == b"{"  # a short file is then reported as truncated


def _refuse_pickle(data: bytes, path: Path) -> None:
    if _looks_like_safetensors(data):
        return
    if data[:4] == b"PK\x03\x04" or (
        data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    ):
        raise CheckpointError(
            f"{path} is a pickle-based PyTorch file; nalln refuses pickled checkpoints because "
            "loading them can execute arbitrary code. Use a checkpoint written by `nalln train` "
            "(.safetensors)"
        )


def _header_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (8-byte length, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]).get("__metadata__") or {}


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint; raises :class:`CheckpointError` with a fix on any problem."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint {p} does not exist; pass a run folder or .safetensors file"
        )
    data = p.read_bytes()
    if not data:
        raise CheckpointError(f"checkpoint {p} is empty (0 bytes); re-run training or restore it")
    _refuse_pickle(data, p)
    try:
        tensors = st_load(data)
        header = _header_metadata(data)
    except (SafetensorError, ValueError, OSError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint {p} is corrupted or truncated ({str(exc).splitlines()[0]}); "
            "use the other checkpoint of the run (best/last) or re-train"
        ) from None
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{p} is a safetensors file but not a nalln checkpoint (no '{FORMAT}' header); "
            "pass a checkpoint written by `nalln train`"
        )
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {p} has format version {header.get('format_version')!r}; this nalln "
            f"({__version__}) reads version {FORMAT_VERSION}"
        )
    meta_json = header.get("meta", "")
    if _digest(meta_json, tensors) != header.get("sha256"):
        raise CheckpointError(
            f"checkpoint {p} failed its SHA-256 check: the file was modified or damaged after it "
            "was written; do not use it, restore it or re-train"
        )
    model_state = {
        k[len(_MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_MODEL_PREFIX)
    }
    scales = {k[len(_SCALE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_SCALE_PREFIX)}
    model_state = _dequantize(model_state, scales, p)
    opt_tensors = {k: v for k, v in tensors.items() if k.startswith(_OPT_PREFIX)}
    try:  # the checksum proves the file is undamaged, not who wrote it: check the structure
        meta = json.loads(meta_json)
        if not isinstance(meta, dict):
            raise ValueError(f"metadata is a JSON {type(meta).__name__}, not an object")
        opt_info = meta.pop("optimizer", None)
        opt_state = _unflatten_optimizer(opt_tensors, opt_info) if opt_info is not None else None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(
            f"checkpoint {p} has malformed metadata ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); it was not written by `nalln train`"
        ) from None
    return Checkpoint(model_state, meta, opt_state, p)


def _dequantize(
    state: dict[str, torch.Tensor], scales: dict[str, torch.Tensor], path: Path
) -> dict[str, torch.Tensor]:
    """int8 weights with per-output-channel scales -> float32 (``q * scale``)."""
    out = dict(state)
    for name, scale in scales.items():
        q = state.get(name)
        if q is None or q.dtype != torch.int8 or scale.numel() != q.shape[0]:
            raise CheckpointError(
                f"checkpoint {path} has an int8 scale for {name!r} that matches no int8 weight; "
                "the file is damaged, re-run `nalln quantize`"
            )
        out[name] = q.float() * scale.float().reshape(-1, *([1] * (q.dim() - 1)))
    left = [k for k, v in out.items() if v.dtype == torch.int8]
    if left:
        raise CheckpointError(
            f"checkpoint {path} stores int8 weights without scales ({left[0]}, ...); it was not "
            "written by `nalln quantize`"
        )
    return out
