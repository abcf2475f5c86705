"""Typed run metadata: 0.1.0 checkpoints still load, unknown keys survive, bad files fail
with one line naming the key; the SE mode of 0.1.0 grids still parses."""

from __future__ import annotations

import pytest

from nalln.errors import CheckpointError, NallnError
from nalln.ir.se_mode import SEMode
from nalln.run_meta import META_VERSION, DataSource, RunMeta

V1 = {  # what nalln 0.1.0 wrote (no meta_version)
    "nalln_version": "0.1.0",
    "model_name": "neurallnet",
    "model_config": {"image_size": 32, "num_steps": 4},
    "class_names": ["Benign", "Early", "Pre", "Pro"],
    "normalisation": {"mean": [0.5] * 3, "std": [0.2] * 3, "preprocess": {"clahe": True}},
    "image_reference": {"brightness": 0.4},
    "train_config": {"augment": {"padding": "reflect"}},
    "data": {"root": "/data/x", "layout": "primary", "variant": None, "synthetic": True},
    "epoch": 3,
    "history": [{"epoch": 1}],
    "kind": "best",
}


def test_a_0_1_0_checkpoint_round_trips_unchanged() -> None:
    meta = RunMeta.from_dict(V1)
    assert meta.version == 1
    assert meta.to_dict() == V1
    assert meta.image_size == 32 and meta.synthetic is True
    assert meta.preprocess == {"clahe": True}
    assert meta.train_setting("augment", "padding") == "reflect"
    assert meta.train_setting("augment", "missing", default="zeros") == "zeros"
    assert meta.extra == {"epoch": 3, "history": [{"epoch": 1}], "kind": "best"}


def test_new_metadata_carries_its_version() -> None:
    d = RunMeta.from_dict(V1).evolve(version=META_VERSION).to_dict()
    assert d["meta_version"] == META_VERSION
    assert RunMeta.from_dict(d).to_dict() == d


@pytest.mark.parametrize("key", ["model_name", "model_config", "class_names", "normalisation"])
def test_missing_required_key_names_it(key: str) -> None:
    bad = {k: v for k, v in V1.items() if k != key}
    with pytest.raises(CheckpointError, match=f"lacks '{key}'"):
        RunMeta.from_dict(bad, "ckpt.safetensors")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"class_names": "Benign"}, "class_names must be a list"),
        ({"model_config": [1]}, "'model_config' in its metadata must be an object"),
        ({"data": 3}, "'data' in its metadata must be an object"),
        ({"meta_version": 99}, "metadata version 99"),
    ],
)
def test_malformed_metadata_is_one_line(change: dict, match: str) -> None:
    with pytest.raises(CheckpointError, match=match) as exc:
        RunMeta.from_dict({**V1, **change}, "ckpt.safetensors")
    assert "\n" not in str(exc.value) and "ckpt.safetensors" in str(exc.value)


def test_the_one_data_root_check() -> None:
    assert DataSource(root="/a").require_root(None) == "/a"
    assert DataSource(root="/a").require_root("/b") == "/b"
    with pytest.raises(NallnError, match="pass --data ROOT"):
        DataSource().require_root(None)


def test_se_mode_parses_every_stored_spelling() -> None:
    assert SEMode.parse("none") is SEMode.NONE  # 0.1.0 grids: static stored as "none"
    assert SEMode.parse("static") is SEMode.STATIC
    assert SEMode.HYBRID.side_car and not SEMode.STATIC.side_car
    assert SEMode.deployable() == (SEMode.STATIC, SEMode.HYBRID)
    with pytest.raises(NallnError, match="use one of static, hybrid"):
        SEMode.parse("none", SEMode.deployable())
    assert f"{SEMode.STATIC}" == "static"  # JSON and f-strings see the plain name
