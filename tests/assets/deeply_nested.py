"""150 blocks, each holding the next one as a child module: a tree 150 levels deep.

Edge: nesting, not length. ``named_modules()``, the recorder and the failure locator all walk the tree; none may
hit Python's recursion limit. The report has 150 Linear layers.
"""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, inner=None):
        super().__init__()
        self.l = nn.Linear(4, 4)
        self.inner = inner

    def forward(self, x):
        x = torch.tanh(self.l(x))
        return self.inner(x) if self.inner is not None else x


def build_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        block = None
        for _ in range(150):
            block = Block(block)
        return block
