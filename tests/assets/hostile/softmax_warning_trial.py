"""torch warns during the run (an implicit softmax dimension), then the trial fails: dataset()'s float targets
have 3 columns and the model outputs 4."""

import torch
from torch import nn
from torch.nn import functional as F


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.softmax(self.a(x)))  # torch: "Implicit dimension choice for softmax has been deprecated"


def dataset() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 8, generator=g), torch.randn(64, 3, generator=g)
