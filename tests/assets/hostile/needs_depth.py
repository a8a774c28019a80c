"""A factory with a required-looking keyword: given ``depth`` from a config file's ``model.kwargs``."""

import torch
from torch import nn


def build_model(width: int = 8) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 4))
