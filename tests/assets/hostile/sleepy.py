"""A model whose forward takes 0.25 s (sleeping, so it costs wall time and no CPU): a scan of 120 batches or a
trial of 1,000 steps takes far longer than checking an output path."""

import time

import torch
from torch import nn


def build_model() -> nn.Module:
    class Sleepy(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.25)
            return super().forward(x)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Sleepy(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
