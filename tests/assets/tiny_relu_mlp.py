"""The smallest valid target: ``Linear(8, 8) → ReLU → Linear(8, 4)`` from a ``build_model()`` factory.

Edge: a model that loads and scans, so that whatever else a test gets wrong (an option, a config file, a
checkpoint, an output path) is the only thing wrong. Its state dict keys are ``0.weight``, ``0.bias``, ``2.weight``,
``2.bias``.
"""

import torch
from torch import nn


def build_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
