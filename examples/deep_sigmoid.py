"""A 30-layer sigmoid MLP with PyTorch's default init: gradients vanish, fast.

sigmoid'(z) <= 0.25, and default init scales the signal by about 0.58 per layer, so each layer multiplies the
backward signal by ~0.1: after 30 layers the first layer's gradient is ~1e-25 of the last one's. Scan it:

    gradscope scan examples/deep_sigmoid.py
    gradscope scan examples/deep_sigmoid.py --fix      # apply the suggested remedies and scan again

``dataset()`` gives scikit-learn's bundled digits (8x8 images: 64 inputs, 10 classes) for a short
training trial.
"""

from __future__ import annotations

import torch
from torch import nn


def build_model(depth: int = 30, width: int = 64) -> nn.Module:
    """64 -> width x depth (Linear + Sigmoid) -> 10, default init."""
    layers: list[nn.Module] = []
    fan_in = 64
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.Sigmoid()]
        fan_in = width
    layers.append(nn.Linear(fan_in, 10))
    return nn.Sequential(*layers)


def dataset() -> tuple[torch.Tensor, torch.Tensor]:
    """Digits as (float32 inputs in [0, 1] of shape (1797, 64), int64 labels of shape (1797,))."""
    from sklearn.datasets import load_digits  # only a trial needs it; scanning works without sklearn

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)
