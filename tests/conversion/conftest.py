"""Fixtures for the conversion tests: CLI runner and a hand-built 'foreign' NIR graph."""

from __future__ import annotations

import itertools
from pathlib import Path

import nir
import numpy as np
import pytest

import nalln.cli.main as cli_main

MY_COMMANDS = ("nalln.cli.convert", "nalln.cli.simulate")


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch):
    """Call ``nalln.cli.main.main`` with the conversion commands registered."""
    present = []
    for name in cli_main.COMMAND_MODULES:
        try:
            __import__(name)
            present.append(name)
        except ImportError:  # other groups land on other branches
            continue
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", tuple(dict.fromkeys([*present, *MY_COMMANDS])))
    return cli_main.main


def foreign_graph(
    size: int = 8, seed: int = 0, channels: int = 2, spiking_output: bool = False
) -> nir.NIRGraph:
    """What another tool (snnTorch-style) might write: Conv -> LIF -> SumPool -> Flatten ->
    Affine -> LIF -> Affine, dt = 1e-4 in node metadata, scalar-free full-shape parameters;
    ``spiking_output``: the last Affine feeds a LIF, whose spikes are the output."""
    rng = np.random.default_rng(seed)
    dt, tau = 1e-4, 5e-4  # 5 steps

    def lif(shape):
        return nir.LIF(
            tau=np.full(shape, tau),
            r=np.full(shape, 3.0),
            v_leak=np.zeros(shape),
            v_threshold=np.full(shape, 0.8),
            metadata={"dt": dt},
        )

    c, h = 4, size // 2
    nodes = {
        "input": nir.Input(input_type={"input": np.array([channels, size, size])}),
        "conv": nir.Conv2d(
            input_shape=(size, size),
            weight=rng.normal(0, 0.6, (c, channels, 3, 3)).astype(np.float32),
            stride=2,
            padding=1,
            dilation=1,
            groups=1,
            bias=rng.normal(0, 0.1, c).astype(np.float32),
        ),
        "lif1": lif((c, h, h)),
        "pool": nir.SumPool2d(
            kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])
        ),
        "flat": nir.Flatten(input_type={"input": np.array([c, h // 2, h // 2])}, start_dim=0),
        "fc1": nir.Affine(
            weight=rng.normal(0, 0.5, (6, c * (h // 2) ** 2)).astype(np.float32),
            bias=np.full(6, 0.05, np.float32),
        ),
        "lif2": lif((6,)),
        "fc2": nir.Affine(
            weight=rng.normal(0, 1, (4, 6)).astype(np.float32), bias=np.zeros(4, np.float32)
        ),
        "output": nir.Output(output_type={"output": np.array([4])}),
    }
    if spiking_output:
        nodes["fc2"] = nir.Affine(
            weight=rng.normal(0, 2, (4, 6)).astype(np.float32), bias=np.full(4, 0.3, np.float32)
        )
        output = nodes.pop("output")
        nodes["lif3"] = lif((4,))
        nodes["output"] = output
    names = list(nodes)
    return nir.NIRGraph(
        nodes, list(itertools.pairwise(names)), metadata={"num_steps": 3}, type_check=False
    )


@pytest.fixture
def make_foreign():
    """The builder of the hand-made foreign graph, for tests that alter it."""
    return foreign_graph


@pytest.fixture
def foreign_nir(tmp_path: Path) -> Path:
    path = tmp_path / "foreign.nir"
    nir.write(path, foreign_graph())
    return path
