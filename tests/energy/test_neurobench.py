"""Our synaptic-operation counts against NeuroBench 2.3's ``SynapticOperations``.

NeuroBench is a test-only dependency (installed with --no-deps; its torchaudio import fails but
``neurobench.metrics.workload`` and ``neurobench.models`` import without it). Where the
conventions coincide the counts must be equal to the operation; where they differ (the
direct-coded stem on a step-by-step model) the difference must be exactly the documented one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nalln.energy.counting import count_model
from nalln.models.neuron import lif_step
from nalln.runs import load_model

nb_workload = pytest.importorskip("neurobench.metrics.workload")
nb_models = pytest.importorskip("neurobench.models")
nb_layers = pytest.importorskip("neurobench.metrics.utils.layers")


def _neurobench(net: nn.Module, x: torch.Tensor):
    """NeuroBench's SynapticOperations on ``net`` for one batch, plus its per-layer counts."""
    model = nb_models.TorchModel(net)
    model.register_hooks()
    try:
        with torch.no_grad():
            preds = model(x)
        per_layer = {}
        names = {id(m): n for n, m in net.named_modules()}
        for hook in model.connection_hooks:
            total = 0
            for inputs in hook.inputs:
                inp = inputs[0] if len(inputs) == 1 else inputs
                ops, _ = nb_layers.single_layer_MACs(inp, hook.layer)
                total += ops
            per_layer[names[id(hook.layer)]] = total / x.shape[0]
        metric = nb_workload.SynapticOperations()
        result = metric(model, preds, (x, torch.zeros(x.shape[0])))
    finally:
        model.cleanup_hooks()
    return result, per_layer


@pytest.fixture(scope="module")
def loaded_and_inputs(tiny_run: Path, synth_root: Path):
    from nalln.data.dataset import load_images, scan

    loaded = load_model(tiny_run)
    index = scan(synth_root)
    images = load_images(index, index.records[:6], loaded.image_size, progress=False)
    return loaded, loaded.preprocess(images)


def test_counts_equal_neurobench(loaded_and_inputs) -> None:
    loaded, x = loaded_and_inputs
    ours = count_model(loaded.model, x, batch_size=len(x))
    result, per_layer = _neurobench(loaded.model, x)
    t = ours.totals
    assert t["synaptic_acs"] > 0 and t["synaptic_macs"] > 0
    assert t["synaptic_acs"] == pytest.approx(result["Effective_ACs"], abs=1e-6)
    assert t["synaptic_macs"] == pytest.approx(result["Effective_MACs"], abs=1e-6)
    assert t["dense_ops"] == pytest.approx(result["Dense"], abs=1e-6)
    for L in ours.layers:  # layer by layer, with NeuroBench's own per-layer function
        assert ours.per_inference(L.ac.sum() + L.mac.sum()) == pytest.approx(
            per_layer[L.name], abs=1e-6
        ), L.name


def test_counts_equal_neurobench_over_batches(loaded_and_inputs) -> None:
    """Per-inference normalisation: batching does not change the counts."""
    loaded, x = loaded_and_inputs
    one = count_model(loaded.model, x, batch_size=len(x)).totals
    split = count_model(loaded.model, x, batch_size=2).totals
    for key in ("synaptic_acs", "synaptic_macs", "dense_ops", "spikes"):
        assert split[key] == pytest.approx(one[key], rel=1e-12)


class StepwiseNet(nn.Module):
    """The same network run one time step at a time, as a naive SNN implementation does:
    the stem conv is recomputed at every step. Uses the model's own layers and lif_step."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        p = m.config.lif
        state: dict[str, torch.Tensor] = {}

        def lif(name: str, current: torch.Tensor) -> torch.Tensor:
            v = state.get(name, torch.zeros_like(current))
            s, state[name] = lif_step(current, v, p)
            return s

        blocks = [*m.stages, *([m.refine] if m.refine is not None else [])]
        logits = []
        for _ in range(m.num_steps):
            h = lif("stem", m.stem(x))
            for i, b in enumerate(blocks):
                h = lif(f"{i}.dw", b.dw(h))
                c = b.pw(h)
                if b.se is not None:
                    c = b.se(c)
                h = lif(f"{i}.pw", c)
            z = m.head.fc1(h.mean(dim=(2, 3)))
            z = lif("head", m.head.bn(z))
            logits.append(m.head.fc2(z))
        return torch.stack(logits).mean(0)


def test_stepwise_model_counts_stem_t_times(loaded_and_inputs) -> None:
    """Where the conventions differ: NeuroBench on a step-by-step model sees the stem T times;
    every other layer is counted identically."""
    loaded, x = loaded_and_inputs
    model = loaded.model
    step = StepwiseNet(model).eval()
    with torch.no_grad():
        assert torch.allclose(step(x), model(x), atol=1e-5)  # same network, same spikes
    ours = count_model(model, x, batch_size=len(x))
    result, per_layer = _neurobench(step, x)
    T = model.num_steps
    stem = ours.layer("stem.conv")
    stem_macs = ours.per_inference(stem.mac.sum())
    stem_dense = ours.per_inference(stem.dense.sum())
    t = ours.totals
    assert result["Effective_ACs"] == pytest.approx(t["synaptic_acs"], abs=1e-6)
    assert result["Effective_MACs"] == pytest.approx(t["synaptic_macs"] + (T - 1) * stem_macs)
    assert result["Dense"] == pytest.approx(t["dense_ops"] + (T - 1) * stem_dense)
    assert per_layer["model.stem.conv"] == pytest.approx(T * stem_macs)
