"""A healthy three-layer ReLU MLP (16 → 32 → 32 → 4, 1,732 parameters): the exit-0 baseline of the CLI tests.

Edge: none on purpose. Every layer is ``ok``, there are no findings, so exit code 0, an empty stderr and a clean
report are what any change to the CLI must keep. Seeded inside ``fork_rng``: the same weights every time, and the
caller's random stream untouched.
"""

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x):
        return self.net(x)
