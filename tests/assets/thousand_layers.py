"""500 blocks of ``Linear(4, 4) → Tanh``: a flat ``nn.Sequential`` of 1,000 layers.

Edge: length. Nothing in the scan, the diagnosis or the renderers may recurse per layer (a RecursionError) or
cut rows: the report has 1,000 layers, the last one named ``999``.
"""

import torch
from torch import nn


def build_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers = []
        for _ in range(500):
            layers += [nn.Linear(4, 4), nn.Tanh()]
        return nn.Sequential(*layers)
