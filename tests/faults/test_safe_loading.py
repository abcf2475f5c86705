"""Files from untrusted sources never execute code: pickled checkpoints are refused, damaged or
tampered ones are reported, and no loader in nalln can unpickle at all."""

from __future__ import annotations

import ast
import pickle
import struct
from pathlib import Path

import pytest
import torch

import nalln
from nalln.checkpoint import load_checkpoint
from nalln.errors import CheckpointError
from nalln.runs import load_model

from .helpers import assert_clean_error, run_cli


class CreateFile:
    """Unpickling this object creates ``path``: if the file appears, code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _payloads(marker: Path) -> dict[str, bytes]:
    """The same code-running payload in every pickle container a checkpoint might come in."""
    evil = {"state_dict": CreateFile(marker)}
    out = {f"pickle-protocol-{p}": pickle.dumps(evil, protocol=p) for p in (0, 2, 4, 5)}
    buf = marker.parent / "torch-save.pt"
    torch.save(evil, buf)  # zip container, as `torch.save` writes .pt/.pth files
    out["torch-save-zip"] = buf.read_bytes()
    torch.save(evil, buf, _use_new_zipfile_serialization=False)
    out["torch-save-legacy"] = buf.read_bytes()
    return out


def test_the_payload_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    """Proof that the test payload is live: unpickling it creates the marker file."""
    marker = tmp_path / "pwned"
    pickle.loads(_payloads(marker)["pickle-protocol-2"])
    assert marker.exists()


@pytest.mark.parametrize(
    "kind",
    [
        "pickle-protocol-0",
        "pickle-protocol-2",
        "pickle-protocol-4",
        "pickle-protocol-5",
        "torch-save-zip",
        "torch-save-legacy",
    ],
)
def test_pickled_checkpoints_are_refused_without_running_code(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    data = _payloads(marker)[kind]
    for name in ("model.safetensors", "model.pt"):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        with pytest.raises(CheckpointError):
            load_model(path)
        if kind != "pickle-protocol-0":  # protocol 0 is text: refused as "not a checkpoint"
            assert "refuses pickled checkpoints" in str(err.value)
    assert not marker.exists()


def test_pickled_checkpoint_refused_by_the_cli(tmp_path: Path, synth_root: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(_payloads(marker)["torch-save-zip"])
    image = next((synth_root / "Original" / "Benign").iterdir())
    proc = run_cli("predict", evil, image, "--out", tmp_path / "pred.csv")
    assert_clean_error(proc, "refuses pickled checkpoints")
    assert not marker.exists() and not (tmp_path / "pred.csv").exists()


def test_no_module_of_nalln_can_unpickle() -> None:
    """A guard for the future: nalln never calls an unpickling loader (np.load only with
    allow_pickle=False)."""
    banned = {
        ("torch", "load"),
        ("pickle", "load"),
        ("pickle", "loads"),
        ("joblib", "load"),
        ("dill", "load"),
        ("dill", "loads"),
        ("np", "load"),
        ("numpy", "load"),
    }
    found = []
    root = Path(nalln.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                if any(n in ("pickle", "dill", "joblib", "cloudpickle") for n in names):
                    found.append(f"{path.name}:{node.lineno} imports a pickle library")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                base = node.func.value
                if isinstance(base, ast.Name) and (base.id, node.func.attr) in banned:
                    if base.id in ("np", "numpy") and _pickle_disabled(node):
                        continue  # np.load(..., allow_pickle=False) reads plain arrays only
                    found.append(f"{path.name}:{node.lineno} calls {base.id}.{node.func.attr}")
    assert not found, found


def _pickle_disabled(call: ast.Call) -> bool:
    return any(
        k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is False
        for k in call.keywords
    )


@pytest.fixture
def ckpt_bytes(tiny_run: Path) -> bytes:
    return (tiny_run / "checkpoints" / "best.safetensors").read_bytes()


def _header_end(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


@pytest.mark.parametrize("cut", [1, 7, 8, 100, -1, -1000])
def test_truncated_checkpoints_are_reported(tmp_path: Path, ckpt_bytes: bytes, cut: int) -> None:
    path = tmp_path / "cut.safetensors"
    path.write_bytes(ckpt_bytes[:cut])
    with pytest.raises(CheckpointError, match="corrupted or truncated|empty"):
        load_checkpoint(path)


def test_flipped_weight_byte_fails_the_sha256(tmp_path: Path, ckpt_bytes: bytes) -> None:
    data = bytearray(ckpt_bytes)
    data[_header_end(ckpt_bytes) + 40] ^= 0x01  # one bit of one weight
    path = tmp_path / "tampered.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="failed its SHA-256 check"):
        load_checkpoint(path)


def test_edited_metadata_fails_the_sha256(tmp_path: Path, ckpt_bytes: bytes) -> None:
    """Change a class name inside the JSON header, keeping the file well-formed."""
    data = ckpt_bytes.replace(b'\\"Benign\\"', b'\\"Bening\\"', 1)
    assert data != ckpt_bytes and len(data) == len(ckpt_bytes)
    path = tmp_path / "edited.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="failed its SHA-256 check"):
        load_checkpoint(path)


def test_zero_byte_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load_checkpoint(path)
