"""A zero-width layer (``nn.Linear(32, 0)``): an empty auxiliary head, as configs with ``n_aux=0`` build."""

import warnings

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch: "Initializing zero-element tensors is a no-op"
            torch.manual_seed(0)
            self.a = nn.Linear(8, 32)
            self.aux = nn.Linear(32, 0)
            self.b = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        return self.b(h) + self.aux(h).sum()
