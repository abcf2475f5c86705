"""Fuzz the checkpoint loader: mutated real checkpoints, random bytes, and hostile files whose
SHA-256 is valid (anyone can recompute it: it detects damage, it does not prove who wrote it).

Mutated bytes must be refused with a one-line CheckpointError or, if loading succeeds, give back
exactly what was written. Hostile metadata must fail cleanly in load_checkpoint or load_model.
"""

from __future__ import annotations

import json
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from nalln.checkpoint import FORMAT, FORMAT_VERSION, _digest, load_checkpoint, save_checkpoint
from nalln.errors import CheckpointError
from nalln.runs import load_model

from .helpers import fuzz_settings, works_or_clean_error

STATE = {
    "layer.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
    "layer.n": torch.tensor(3),
}
OPTIM = {
    "state": {0: {"step": torch.tensor(2.0), "exp_avg": torch.ones(2, 3)}},
    "param_groups": [{"lr": 0.001, "betas": [0.9, 0.999], "params": [0]}],
}
META = {"epoch": 1, "class_names": ["Benign", "Early", "Pre", "Pro"], "note": "fuzz seed"}


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nalln-fuzz-ckpt-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def original(scratch: Path) -> bytes:
    return save_checkpoint(scratch / "seed.safetensors", STATE, META, OPTIM).read_bytes()


def _header_len(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


@st.composite
def mutations(draw: st.DrawFn, size: int, header: int) -> list[tuple[str, int, int]]:
    """Edits weighted towards the JSON header, where the parser has the most to get wrong."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["byte", "byte", "truncate", "insert", "delete", "length"]))
        limit = header if draw(st.booleans()) else size
        out.append((kind, draw(st.integers(0, limit - 1)), draw(st.integers(0, 255))))
    return out


def _apply(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(data)
    for kind, pos, value in edits:
        pos = min(pos, max(len(b) - 1, 0))
        if kind == "byte" and b:
            b[pos] = value
        elif kind == "truncate":
            del b[pos:]
        elif kind == "insert":
            b[pos:pos] = bytes([value]) * (1 + value % 7)
        elif kind == "delete":
            del b[pos : pos + 1 + value % 7]
        elif kind == "length" and len(b) >= 8:  # the 8-byte header length
            b[:8] = struct.pack("<Q", (struct.unpack("<Q", bytes(b[:8]))[0] + value - 128) % 2**64)
    return bytes(b)


def _same_as_written(ckpt) -> None:
    assert ckpt.meta["note"] == "fuzz seed" and ckpt.meta["epoch"] == 1
    for k, v in STATE.items():
        assert torch.equal(ckpt.state_dict[k], v)
    assert torch.equal(ckpt.optimizer_state["state"][0]["exp_avg"], OPTIM["state"][0]["exp_avg"])


@fuzz_settings(800)
@given(data=st.data())
def test_mutated_checkpoints_are_refused_or_intact(scratch: Path, original: bytes, data) -> None:
    edits = data.draw(mutations(len(original), _header_len(original)))
    path = scratch / "mutated.safetensors"
    path.write_bytes(_apply(original, edits))
    out = works_or_clean_error(load_checkpoint, path)
    if isinstance(out, Exception):
        assert isinstance(out, CheckpointError)
    else:  # a harmless edit (e.g. JSON whitespace): the content is what was written
        _same_as_written(out)


@fuzz_settings(300)
@given(blob=st.binary(max_size=2048))
def test_random_bytes_are_refused(scratch: Path, blob: bytes) -> None:
    path = scratch / "random.safetensors"
    path.write_bytes(blob)
    assert isinstance(works_or_clean_error(load_checkpoint, path), CheckpointError)


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
# values that exercise type confusion in the model config, without asking for a giant model
config_values = st.one_of(
    json_scalars,
    st.sampled_from([0, 1, 2, 3, 4, 8, 32, 64, -1, 0.5, 1.0, 2.0]),
    st.lists(st.sampled_from([8, 16, "x", None, -3]), max_size=5),
)
config_keys = st.sampled_from(
    [
        "image_size",
        "num_steps",
        "widths",
        "width_multiplier",
        "num_classes",
        "head_hidden",
        "refine_channels",
        "tau",
        "v_threshold",
        "se_ratio",
        "se_position",
        "use_se",
        "batchnorm",
        "in_channels",
        "stem_kernel",
        "bogus",
    ]
)
hostile_meta = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "model_name": st.one_of(
                st.sampled_from(["neurallnet", "neurallnet_no_bn", "nope"]), json_values
            ),
            "model_config": st.one_of(
                st.dictionaries(config_keys, config_values, max_size=4), json_values
            ),
            "class_names": st.one_of(st.lists(st.text(max_size=5), max_size=5), json_values),
            "normalisation": st.one_of(
                st.fixed_dictionaries(
                    {
                        "mean": st.lists(st.floats(), max_size=4),
                        "std": st.lists(st.floats(), max_size=4),
                    },
                    optional={"preprocess": json_values},
                ),
                json_values,
            ),
            "optimizer": st.one_of(
                st.fixed_dictionaries(
                    {"param_groups": json_values},
                    optional={
                        "scalars": st.dictionaries(st.sampled_from(["0", "1", "x"]), json_values)
                    },
                ),
                json_values,
            ),
        },
    ),
)
tensor_names = st.one_of(
    st.sampled_from(
        [
            "model/stem.conv.weight",
            "model/head.fc2.bias",
            "optimizer/0/step",
            "optimizer/x/exp_avg",
            "optimizer/0",
            "optimizer//",
            "other",
        ]
    ),
    st.text(min_size=1, max_size=12).map(lambda s: "model/" + s),
)
tensors = st.dictionaries(
    tensor_names,
    st.tuples(
        st.sampled_from([torch.float32, torch.float16, torch.int64, torch.uint8, torch.bool]),
        st.lists(st.integers(0, 3), max_size=3),
    ),
    max_size=4,
)


def _write_hostile(path: Path, meta_json: str, tensor_spec: dict, header_extra: dict) -> None:
    tens = {name: torch.zeros(shape, dtype=dtype) for name, (dtype, shape) in tensor_spec.items()}
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "meta": meta_json}
    header["sha256"] = _digest(meta_json, tens)
    header.update(header_extra)
    path.write_bytes(st_save(tens, metadata=header))


@fuzz_settings(600)
@given(
    meta=hostile_meta,
    tensor_spec=tensors,
    header_extra=st.dictionaries(
        st.sampled_from(["format", "format_version", "meta"]), st.text(max_size=6), max_size=1
    ),
)
def test_hostile_checkpoints_with_a_valid_checksum_fail_cleanly(
    scratch: Path, meta, tensor_spec: dict, header_extra: dict
) -> None:
    path = scratch / "hostile.safetensors"
    _write_hostile(path, json.dumps(meta), tensor_spec, header_extra)
    out = works_or_clean_error(load_checkpoint, path)
    if not isinstance(out, Exception):
        out = works_or_clean_error(load_model, path)
    assert isinstance(out, CheckpointError) or hasattr(out, "model")


def test_header_metadata_that_is_not_json_text_is_refused(scratch: Path) -> None:
    path = scratch / "badmeta.safetensors"
    _write_hostile(path, "{not json", {}, {})
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.fixture(scope="module")
def real_weights(tiny_run: Path) -> tuple[dict, dict]:
    ckpt = load_checkpoint(tiny_run / "checkpoints" / "best.safetensors")
    return {f"model/{k}": v for k, v in ckpt.state_dict.items()}, ckpt.meta


@fuzz_settings(250)
@given(
    class_names=st.one_of(st.lists(st.text(max_size=5), max_size=5), json_values),
    normalisation=st.one_of(
        st.fixed_dictionaries(
            {
                "mean": st.lists(st.floats(), max_size=4),
                "std": st.lists(st.floats(), max_size=4),
                "preprocess": st.one_of(
                    st.fixed_dictionaries(
                        {}, optional={"clahe": json_values, "normalisation": json_values}
                    ),
                    json_values,
                ),
            },
        ),
        json_values,
    ),
    drop=st.sampled_from([None, "model_config", "class_names", "normalisation", "model_name"]),
)
def test_real_weights_with_hostile_metadata_fail_cleanly_or_predict(
    scratch: Path, real_weights: tuple[dict, dict], class_names, normalisation, drop
) -> None:
    """Weights that fit, metadata that lies: loading and one prediction must not crash."""
    from nalln.inference import predict_logits

    tens, meta = real_weights
    meta = {**meta, "class_names": class_names, "normalisation": normalisation}
    meta.pop(drop, None)
    meta_json = json.dumps(meta)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "meta": meta_json}
    header["sha256"] = _digest(meta_json, tens)
    path = scratch / "lying.safetensors"
    path.write_bytes(st_save(tens, metadata=header))
    loaded = works_or_clean_error(load_model, path)
    if isinstance(loaded, Exception):
        assert isinstance(loaded, CheckpointError)
        return
    images = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    logits = predict_logits(loaded.model, loaded.preprocess, images)
    assert logits.shape == (2, len(loaded.class_names)) and torch.isfinite(logits).all()
