"""Changes the working directory at import (to $HOSTILE_CHDIR), as scripts that locate their data files do."""

import os

import torch
from torch import nn

os.chdir(os.environ["HOSTILE_CHDIR"])


def build_model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
