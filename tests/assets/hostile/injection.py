"""Layer names that carry a GitHub Actions workflow command and a terminal escape sequence.

``add_module`` accepts any string without a dot, so a newline followed by ``::error ...::`` becomes part of a
qualified layer name; printed raw at the start of a line, the runner executes it as a workflow command. The
sigmoid stack makes the scan report findings that list these layers.
"""

import torch
from torch import nn

INJECTED = "a\n::error title=x::pwned"
ESCAPE = "b\x1b[2Jc"


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            layers: list[nn.Module] = [nn.Linear(8, 8)]
            for _ in range(11):
                layers += [nn.Sigmoid(), nn.Linear(8, 8)]
            self.body = nn.Sequential(*layers)
            self.add_module(INJECTED, nn.Linear(8, 4))
            self.add_module(ESCAPE, nn.Linear(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = getattr(self, INJECTED)(self.body(x))
        return getattr(self, ESCAPE)(x)
