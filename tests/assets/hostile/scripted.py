"""The target is a ``torch.jit.script``-ed module (a module-level ``model``)."""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


with torch.random.fork_rng(devices=[]):
    torch.manual_seed(0)
    model = torch.jit.script(Net())


def example_inputs() -> torch.Tensor:
    return torch.randn(4, 8)
