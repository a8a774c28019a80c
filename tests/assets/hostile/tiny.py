"""A healthy three-layer MLP (8 -> 8 -> 4); the model every option/config test points at."""

import torch
from torch import nn


def build_model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
