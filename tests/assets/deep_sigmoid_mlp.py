"""A deep stack of ``Linear(width, width)`` layers with a Sigmoid between each two (30 layers by default).

Edge: vanishing gradients, the classic error. The sigmoid's derivative is at most 1/4, so the gradient shrinks by
orders of magnitude toward the input: exit code 1, ``vanishing_gradient`` as an error, suggestions, and a ``--fix``
that normalization rescues. ``depth`` and ``width`` are the knobs ``--model-kwargs`` turns.
"""

import torch
from torch import nn


def build_model(depth=30, width=16):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers = [nn.Linear(width, width)]
        for _ in range(depth - 1):
            layers += [nn.Sigmoid(), nn.Linear(width, width)]
        return nn.Sequential(*layers)
