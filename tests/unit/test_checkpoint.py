import pickle
from pathlib import Path

import pytest
import torch

import nalln
from nalln.checkpoint import load_checkpoint, save_checkpoint
from nalln.errors import CheckpointError
from nalln.runs import load_model


def _save(path: Path) -> Path:
    m = nalln.create("neurallnet", image_size=32, width_multiplier=0.25)
    opt = torch.optim.Adam(m.parameters())
    m(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    return save_checkpoint(path, m.state_dict(), {"epoch": 3}, opt.state_dict())


def test_roundtrip_keeps_weights_meta_and_optimizer(tmp_path: Path) -> None:
    path = _save(tmp_path / "c.safetensors")
    ck = load_checkpoint(path)
    assert ck.meta["epoch"] == 3 and ck.meta["nalln_version"] == nalln.__version__
    m = nalln.create("neurallnet", image_size=32, width_multiplier=0.25)
    m.load_state_dict(ck.state_dict)
    opt = torch.optim.Adam(m.parameters())
    opt.load_state_dict(ck.optimizer_state)
    assert opt.state_dict()["state"][0]["exp_avg"].shape == m.stem.conv.weight.shape


def test_tampered_truncated_and_empty_files_are_refused(tmp_path: Path) -> None:
    data = _save(tmp_path / "c.safetensors").read_bytes()
    flipped = bytearray(data)
    flipped[-3] ^= 0x01
    (tmp_path / "t.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(tmp_path / "t.safetensors")
    (tmp_path / "h.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(tmp_path / "h.safetensors")
    (tmp_path / "e.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "e.safetensors")


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/nalln-pwned-marker"),))


def test_pickled_checkpoints_are_refused_without_being_executed(tmp_path: Path) -> None:
    marker = Path("/tmp/nalln-pwned-marker")
    marker.unlink(missing_ok=True)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"state": _Payload()}))
    torch.save({"x": torch.zeros(1)}, tmp_path / "torch.pt")
    for name in ("evil.pkl", "torch.pt"):
        with pytest.raises(CheckpointError, match="pickle"):
            load_checkpoint(tmp_path / name)
    assert not marker.exists()


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path, tiny_run: Path) -> None:
    ck = load_checkpoint(tiny_run / "checkpoints" / "best.safetensors")
    meta = dict(ck.meta)
    meta["model_config"] = {**meta["model_config"], "width_multiplier": 1.0}
    bad = tmp_path / "other.safetensors"
    save_checkpoint(bad, ck.state_dict, meta)
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(bad)
    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a nalln checkpoint"):
        load_checkpoint(plain)


def test_a_huge_architecture_in_the_metadata_is_refused_before_it_is_built(
    tmp_path: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """widths of 10^5 channels would allocate tens of GB; the meta-device check refuses first."""
    import nalln.runs as runs

    ck = load_checkpoint(tiny_run / "checkpoints" / "best.safetensors")
    meta = dict(ck.meta)
    meta["model_config"] = {**meta["model_config"], "widths": [100_000] * 4}
    bad = tmp_path / "huge.safetensors"
    save_checkpoint(bad, ck.state_dict, meta)
    built_on: list[str] = []
    real_build = runs._build
    monkeypatch.setattr(
        runs, "_build", lambda m, p, d: built_on.append(d.type) or real_build(m, p, d)
    )
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(bad)
    assert built_on == ["meta"]  # never built for real


@pytest.mark.parametrize(
    "change",
    [{"num_steps": 100_000}, {"image_size": 100_000}, {"image_size": 2048, "num_steps": 64}],
)
def test_inference_sizes_beyond_any_use_are_refused(
    tmp_path: Path, tiny_run: Path, change: dict
) -> None:
    ck = load_checkpoint(tiny_run / "checkpoints" / "best.safetensors")
    meta = dict(ck.meta)
    meta["model_config"] = {**meta["model_config"], **change}
    bad = tmp_path / "big.safetensors"
    save_checkpoint(bad, ck.state_dict, meta)
    with pytest.raises(CheckpointError, match="must be"):
        load_model(bad)
