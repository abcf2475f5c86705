"""Helpers for the energy / hardware tests."""

from __future__ import annotations

import importlib.util
import itertools
from types import SimpleNamespace

import nir
import numpy as np
import pytest


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path):
    """Run ``nalln ...`` in-process: returns (exit code, stdout, stderr).

    Only command modules that exist are registered, so this area's commands can be tested on a
    branch where other groups are not merged yet. User target folders are isolated.
    """
    import nalln.cli.main as main_mod

    present = tuple(m for m in main_mod.COMMAND_MODULES if importlib.util.find_spec(m))
    monkeypatch.setattr(main_mod, "COMMAND_MODULES", present)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NALLN_TARGETS_DIR", raising=False)

    def run(*argv: str):
        code = main_mod.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


# -- small NIR graphs another tool might write (exact counts in test_plan_counting.py) --


def chain(nodes: dict, **meta) -> nir.NIRGraph:
    return nir.NIRGraph(nodes, list(itertools.pairwise(nodes)), metadata=meta, type_check=False)


def two_layer() -> nir.NIRGraph:
    """Input [3] -> Affine -> IF [4] -> Affine -> IF [2] -> Output, threshold 0.9, zero biases.

    On x = [1, 0, 2] the first currents are [1, 0.5, 0, -1]: neuron 0 fires at every step,
    neuron 1 at steps 1 and 3, the others never; the second layer's currents then make its
    neuron 0 fire at every step and its neuron 1 at steps 1 and 3."""
    w1 = np.array([[1, 5, 0], [0.5, 0, 0], [0, 7, 0], [1, 0, -1]], np.float64)
    w2 = np.array([[1, 0, 2, 0], [0.5, 1, 0, 3]], np.float64)

    def neuron(n):
        return nir.IF(r=np.ones(n), v_threshold=np.full(n, 0.9))

    return chain(
        {
            "input": nir.Input(input_type={"input": np.array([3])}),
            "fc1": nir.Affine(weight=w1, bias=np.zeros(4)),
            "if1": neuron(4),
            "fc2": nir.Affine(weight=w2, bias=np.zeros(2)),
            "if2": neuron(2),
            "output": nir.Output(output_type={"output": np.array([2])}),
        },
        num_steps=4,
    )


def recurrent_graph() -> nir.NIRGraph:
    rng = np.random.default_rng(0)
    k = np.ones(6)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([5])}),
        "fc_in": nir.Affine(weight=rng.normal(0, 0.8, (6, 5)), bias=rng.normal(0, 0.1, 6)),
        "cell": nir.LIF(
            tau=k * 5e-4, r=k * 3.0, v_leak=k * 0, v_threshold=k * 0.6, metadata={"dt": 1e-4}
        ),
        "w_rec": nir.Linear(weight=np.where(np.eye(6) > 0, 0.0, rng.normal(0, 0.7, (6, 6)))),
        "fc_out": nir.Affine(weight=rng.normal(0, 1, (3, 6)), bias=np.zeros(3)),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    edges = [("input", "fc_in"), ("fc_in", "cell"), ("cell", "w_rec"), ("w_rec", "cell")]
    edges += [("cell", "fc_out"), ("fc_out", "output")]
    return nir.NIRGraph(nodes, edges, type_check=False)


def pooled_graph() -> nir.NIRGraph:
    """Conv -> LIF [2, 4, 4] -> SumPool 2x2 -> Flatten -> Affine -> LIF -> Output."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.8, (3, 8))
    w[0, 1] = 0.0  # a zero weight the count must skip
    lif = {"tau": 2e-4, "r": 2.0, "v_leak": 0.0, "v_threshold": 0.5}

    def neuron(shape):
        return nir.LIF(**{k: np.full(shape, v) for k, v in lif.items()}, metadata={"dt": 1e-4})

    return chain(
        {
            "input": nir.Input(input_type={"input": np.array([1, 4, 4])}),
            "conv": nir.Conv2d(
                input_shape=(4, 4),
                weight=rng.normal(0.5, 0.5, (2, 1, 3, 3)),
                stride=1,
                padding=1,
                dilation=1,
                groups=1,
                bias=np.zeros(2),
            ),
            "lif1": neuron((2, 4, 4)),
            "pool": nir.SumPool2d(
                kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])
            ),
            "flat": nir.Flatten(input_type={"input": np.array([2, 2, 2])}, start_dim=0),
            "fc": nir.Affine(weight=w, bias=np.zeros(3)),
            "lif2": neuron((3,)),
            "output": nir.Output(output_type={"output": np.array([3])}),
        },
        num_steps=5,
    )


@pytest.fixture
def graphs() -> SimpleNamespace:
    """The graph builders above: ``two_layer``, ``recurrent``, ``pooled``."""
    return SimpleNamespace(two_layer=two_layer, recurrent=recurrent_graph, pooled=pooled_graph)
