"""The paper's learning-rate schedule and early-stopping rule, as small pure pieces."""

from __future__ import annotations

from dataclasses import dataclass


def paper_lr(epoch: int, lr0: float, decay_epochs: float = 20.0) -> float:
    """``lr0 * 10 ** (-epoch / decay_epochs)``; epoch counts from 0."""
    return lr0 * 10.0 ** (-epoch / decay_epochs)


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without a strictly better monitored value."""

    patience: int
    best: float = float("-inf")
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record one epoch; returns True if it is a new best."""
        if value > self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience
