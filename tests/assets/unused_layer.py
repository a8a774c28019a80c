"""A two-layer MLP that also registers a Linear its forward() never calls.

Edge: a warning and nothing else. The unused layer is ``disconnected`` (a warning), so the model is still healthy:
exit code 0 by default, 1 under ``--fail-on warning``.
"""

import torch
from torch import nn


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.a = nn.Linear(16, 32)
            self.b = nn.Linear(32, 4)
            self.unused = nn.Linear(8, 8)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))
