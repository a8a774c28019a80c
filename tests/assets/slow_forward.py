"""A model whose forward() takes half a second and touches ``started`` next to this file when it begins.

Edge: Ctrl-C in the middle of a scan. The test waits for the marker, sends SIGINT, and expects exit 130, nothing on
stdout and no report written. Copy it into a temporary directory: it writes next to itself.
"""

import pathlib
import time

from torch import nn

STARTED = pathlib.Path(__file__).with_name("started")


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(8, 4)

    def forward(self, x):
        STARTED.touch()
        time.sleep(0.5)
        return self.l(x)
