"""Settings given with --resume must agree with the run's own; they are never dropped silently."""

from __future__ import annotations

import argparse

import pytest

from nalln.cli.main import build_parser
from nalln.cli.train import build_config
from nalln.config import TrainConfig
from nalln.errors import NallnError
from nalln.training.loop import check_same_settings


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", "--data", "D", "--out", "R", "--resume", *argv])


def test_a_changed_setting_is_refused_and_named() -> None:
    stored = TrainConfig.from_dict({"epochs": 30, "lr": 1e-3})
    given = build_config(_args("--epochs", "60"), stored.to_dict())
    with pytest.raises(NallnError, match=r"epochs \(run: 30, given: 60\)") as err:
        check_same_settings(stored, given)
    assert "lr" not in str(err.value)  # only what the user changed is listed


def test_repeating_the_runs_own_settings_is_accepted() -> None:
    stored = TrainConfig.from_dict({"epochs": 30, "model_config": {"image_size": 32}})
    given = build_config(_args("--epochs", "30", "--image-size", "32"), stored.to_dict())
    check_same_settings(stored, given)


def test_the_device_may_change_on_resume() -> None:
    stored = TrainConfig.from_dict({"epochs": 30, "device": "cuda"})
    given = build_config(_args("--device", "cpu"), stored.to_dict())
    check_same_settings(stored, given)


def test_nested_setting_from_set_is_compared() -> None:
    stored = TrainConfig.from_dict({"model_config": {"image_size": 32, "head_hidden": 16}})
    given = build_config(_args("--set", "model_config.head_hidden=8"), stored.to_dict())
    with pytest.raises(NallnError, match=r"model_config.head_hidden \(run: 16, given: 8\)"):
        check_same_settings(stored, given)
