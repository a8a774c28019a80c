"""A model with an ``nn.LazyLinear`` whose parameters are not materialised yet."""

import torch
from torch import nn


def build_model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 4))


def example_inputs() -> torch.Tensor:
    return torch.randn(4, 8)
