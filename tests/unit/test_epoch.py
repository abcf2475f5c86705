"""The shared training epoch and its losses (``nalln.training.epoch``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nalln.deploy.finetune_fixed_point import FinetuneConfig
from nalln.errors import NallnError
from nalln.training.epoch import cross_entropy, distillation, train_epoch


def _data(n: int = 64):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 6), generator=g, dtype=torch.uint8)
    y = (x[:, 0] > 127).long()
    return x, y


def test_distillation_reduces_to_its_parts() -> None:
    torch.manual_seed(0)
    teacher = nn.Linear(6, 2)
    x = torch.randn(8, 6)
    y = torch.randint(0, 2, (8,))
    logits = torch.randn(8, 2)
    ce = F.cross_entropy(logits, y)
    assert torch.equal(cross_entropy(logits, y, x), ce)
    assert torch.equal(distillation(teacher, 0.0)(logits, y, x), ce)
    same = teacher(x).detach()  # a student that equals its teacher pays no KL
    torch.testing.assert_close(
        distillation(teacher, 0.5)(same, y, x), 0.5 * F.cross_entropy(same, y)
    )
    assert float(distillation(teacher, 1.0)(logits, y, x)) > 0


def test_train_epoch_learns_and_counts() -> None:
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(6, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)

    def prepare(b: torch.Tensor) -> torch.Tensor:
        return b.float() / 255.0

    order = torch.arange(len(x))
    args = dict(batch_size=16, desc="t", diverged=lambda v: f"diverged ({v})")
    first = train_epoch(model, opt, x, y, order, prepare, **args)
    for _ in range(20):
        last = train_epoch(model, opt, x, y, order, prepare, **args)
    assert first.images == last.images == len(x)
    assert last.loss < first.loss and last.accuracy >= 0.9


def test_train_epoch_stops_on_a_non_finite_loss() -> None:
    x, y = _data(8)
    model = nn.Linear(6, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def nan_input(b: torch.Tensor) -> torch.Tensor:
        return torch.full((len(b), 6), float("nan"))

    with pytest.raises(NallnError, match=r"^diverged at 3; lower --lr$"):
        train_epoch(
            model,
            opt,
            x,
            y,
            torch.arange(8),
            nan_input,
            batch_size=4,
            desc="t",
            diverged=lambda _v: "diverged at 3; lower --lr",
        )


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_finetune_refuses_a_distillation_weight_outside_0_1(alpha: float) -> None:
    with pytest.raises(NallnError, match="--distill must be between 0 and 1"):
        FinetuneConfig(distill=alpha)
