"""INT8 weight quantisation: the arithmetic, the checkpoint format and the quantised run."""

from __future__ import annotations

import json

import pytest
import torch

from nalln.analysis.quantization import dequantize_tensor, quantize_tensor
from nalln.checkpoint import load_checkpoint, save_checkpoint
from nalln.errors import CheckpointError


def test_per_channel_symmetric_rounding():
    torch.manual_seed(0)
    w = torch.randn(6, 3, 3, 3) * torch.tensor([0.01, 0.1, 1, 10, 100, 0]).view(-1, 1, 1, 1)
    q, s = quantize_tensor(w)
    assert q.dtype == torch.int8 and s.shape == (6,)
    assert q.abs().max() <= 127
    for c in range(5):
        assert q[c].abs().max() == 127  # each channel uses its own full range
        assert (dequantize_tensor(q, s)[c] - w[c]).abs().max() <= s[c] / 2 + 1e-6
    assert s[5] == 1 and torch.all(q[5] == 0)  # an all-zero channel stays exact


def test_checkpoint_stores_int8_and_dequantises_on_load(tmp_path):
    w = torch.randn(4, 8)
    q, s = quantize_tensor(w)
    path = save_checkpoint(
        tmp_path / "q.safetensors",
        {"fc.weight": q, "fc.bias": torch.ones(4)},
        {"a": 1},
        scales={"fc.weight": s},
    )
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert header["model/fc.weight"]["dtype"] == "I8"
    assert header["qscale/fc.weight"]["dtype"] == "F32"
    ck = load_checkpoint(path)
    assert ck.state_dict["fc.weight"].dtype == torch.float32
    assert torch.allclose(ck.state_dict["fc.weight"], dequantize_tensor(q, s))
    assert torch.equal(ck.state_dict["fc.bias"], torch.ones(4))


def test_int8_without_scale_and_scale_without_int8_are_refused(tmp_path):
    q, s = quantize_tensor(torch.randn(3, 2))
    p = save_checkpoint(tmp_path / "a.safetensors", {"w": q}, {})
    with pytest.raises(CheckpointError, match="without scales"):
        load_checkpoint(p)
    with pytest.raises(ValueError, match="needs an int8 tensor"):
        save_checkpoint(tmp_path / "b.safetensors", {"w": q.float()}, {}, scales={"w": s})


def test_quantize_run_is_usable_by_evaluate_and_predict(cli, run_copy, one_image, tmp_path, is_png):
    from nalln.runs import load_model

    out = tmp_path / "tiny-int8"
    code, stdout, err = cli(
        "quantize", run_copy, "--out", out, "--n-resamples", "200", "--sensitivity"
    )
    assert code == 0, err
    assert "SYNTHETIC" in stdout and "checkpoint file, bytes (measured)" in stdout
    q = json.loads((out / "quantization.json").read_text())
    assert q["size"]["state_ratio"] < 0.4
    assert q["size"]["file_int8_bytes"] < q["size"]["file_fp32_bytes"]
    assert q["weights"]["worst_relative_rms_error"] < 0.02
    acc = q["accuracy"]
    assert 0 <= acc["int8"]["accuracy"] <= 1 and acc["n"] > 0
    assert len(q["sensitivity"]) == q["weights"]["tensors"]
    for f in ("config.json", "splits.csv", "metrics.csv"):
        assert (out / f).is_file()
    # the ordinary load path
    fp32, int8 = load_model(run_copy), load_model(out)
    assert int8.meta["quantized"] == "int8"
    w32, w8 = fp32.model.stem.conv.weight, int8.model.stem.conv.weight
    assert not torch.equal(w32, w8) and torch.allclose(w32, w8, atol=float(w32.abs().max()) / 127)
    code, stdout, err = cli("evaluate", out, "--n-resamples", "200", "-q")
    assert code == 0, err
    assert (out / "eval-test" / "metrics.json").is_file()
    code, stdout, err = cli("predict", out, one_image)
    assert code == 0, err
    assert one_image.name in stdout and "predicted" in stdout
    # quantising twice, or over an existing run, is refused
    code, _, err = cli("quantize", out)
    assert code == 2 and "already quantised" in err
    code, _, err = cli("quantize", run_copy, "--out", out)
    assert code == 2 and "already holds a checkpoint" in err


def test_keep_float_names_are_checked(cli, run_copy, tmp_path):
    code, _, err = cli("quantize", run_copy, "--out", tmp_path / "q", "--keep-float", "stem")
    assert code == 2 and "no such Conv2d/Linear layer" in err and "stem.conv" in err
    code, _, err = cli(
        "quantize", run_copy, "--out", tmp_path / "q2", "--keep-float", "stem.conv", "--no-compare"
    )
    assert code == 0, err
    q = json.loads((tmp_path / "q2" / "quantization.json").read_text())
    assert q["kept_float"] == ["stem.conv"] and "accuracy" not in q


def test_failed_quantisation_leaves_no_folder(cli, run_copy, tmp_path):
    out = tmp_path / "q"
    code, _, err = cli("quantize", run_copy, "--out", out, "--data", tmp_path / "missing")
    assert code == 2 and "does not exist" in err
    assert not out.exists()
