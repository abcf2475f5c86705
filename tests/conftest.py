"""Shared fixtures: a tiny synthetic data set and a tiny trained run (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic images per class at 32x32 pixels."""
    from nalln.data.synth import SynthSpec, generate

    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, SynthSpec(n_per_class=12, size=32, seed=7), progress=False)
    return root


TINY_MODEL = {"image_size": 32, "width_multiplier": 0.25, "head_hidden": 16, "refine_channels": 64}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, synth_root: Path) -> Path:
    """A run folder holding a tiny NeurALLNet trained for two epochs on ``synth_root``."""
    from nalln.config import TrainConfig
    from nalln.training.loop import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = TrainConfig(model_config=dict(TINY_MODEL), epochs=2, batch_size=8)
    torch.manual_seed(0)
    train(synth_root, out, cfg, progress=False, echo=lambda _msg: None)
    return out
