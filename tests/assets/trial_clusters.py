"""A small MLP with a ``dataset()`` hook: three Gaussian clusters in 8 dimensions, 90 samples.

Edge: ``gradscope trial`` trains on the file's own data. With the defaults (2 ReLU layers) the model is healthy and
only the untreated run is trained; ``--model-kwargs '{"depth": 12, "act": "sigmoid"}'`` makes it vanish, so remedies
get planned and compared. Tests that need a broken ``dataset()`` copy this file and replace its return line.
"""

import torch
from torch import nn


def build_model(depth=2, act="relu"):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers, width = [], 8
        for _ in range(depth):
            layers += [nn.Linear(width, 16), nn.Sigmoid() if act == "sigmoid" else nn.ReLU()]
            width = 16
        return nn.Sequential(*layers, nn.Linear(width, 3))


def dataset():
    g = torch.Generator().manual_seed(1)
    means = 2 * torch.randn(3, 8, generator=g)
    y = torch.randint(0, 3, (90,), generator=g)
    return means[y] + torch.randn(90, 8, generator=g), y
