"""A collapsing sigmoid stack (so ``--fix`` has work to do) that holds a ``threading.Lock``: it cannot be
deep-copied or pickled."""

import threading

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            layers: list[nn.Module] = [nn.Linear(8, 8)]
            for _ in range(12):
                layers += [nn.Sigmoid(), nn.Linear(8, 8)]
            self.body = nn.Sequential(*layers)
        self.lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            return self.body(x)
