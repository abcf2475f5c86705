"""The SE gate as plain numpy: shared by our Lava SE process and the fixed-point emulator."""

from __future__ import annotations

import numpy as np


def se_gate_numpy(x: np.ndarray, w1, b1, w2, b2) -> np.ndarray:
    """Per-channel gate for one current map ``x`` in Lava (W, H, C) layout, in float64.

    ``sigmoid(w2 @ relu(w1 @ mean_hw(x) + b1) + b2)``; the mean runs over Lava's layout so that
    the emulator and the Lava process sum in the same order and round identically.
    """
    pooled = x.reshape(-1, x.shape[-1]).mean(axis=0)
    hidden = np.maximum(w1 @ pooled + b1, 0.0)
    return 1.0 / (1.0 + np.exp(-(w2 @ hidden + b2)))
