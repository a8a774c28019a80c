"""Three Linear layers registered in the opposite order to the one forward() runs them in.

Edge: the report lists layers in forward order (first, middle, last), not registration order. Input inference
looks at the first *registered* layer (``last``, 32 inputs), which is not the first one run (16 inputs), so a scan
needs ``--input-shape 8,16``.
"""

import torch
from torch import nn


class Reordered(nn.Module):
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.last = nn.Linear(32, 4)
            self.middle = nn.Linear(32, 32)
            self.first = nn.Linear(16, 32)

    def forward(self, x):
        return self.last(torch.relu(self.middle(torch.relu(self.first(x)))))
