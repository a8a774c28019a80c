"""Writes to file descriptor 1 behind Python's back, at import and in forward (a C library, a subprocess)."""

import os
import sys

import torch
from torch import nn

os.system("echo noise-from-os-system")
os.write(1, b"noise-from-fd-1\n")
print("noise-to-dunder-stdout", file=sys.__stdout__, flush=True)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        os.write(1, b"noise-in-forward\n")
        print("noise-in-forward-dunder", file=sys.__stdout__, flush=True)
        return self.l(x)
