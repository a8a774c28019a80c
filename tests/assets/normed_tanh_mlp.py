"""A 6-block Linear → LayerNorm → Tanh MLP and, with ``norm=False, gain=0.1``, its regressed variant.

Edge: a regression against a baseline. Both variants have the same layer names (fc0..fc5, norm0..norm5, act0..act5,
head), so ``gradscope check --baseline`` pairs them up: without the norms (``nn.Identity``, not a layer: six
removed) and with the init shrunk to gain 0.1, the input-side signal drops by orders of magnitude and the first
layers vanish.
"""

from collections import OrderedDict

import torch
from torch import nn


def build_model(norm=True, gain=1.0, depth=6, width=32):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers = OrderedDict()
        fan_in = 16
        for i in range(depth):
            layers[f"fc{i}"] = nn.Linear(fan_in, width)
            nn.init.normal_(layers[f"fc{i}"].weight, std=gain / fan_in**0.5)
            nn.init.zeros_(layers[f"fc{i}"].bias)
            layers[f"norm{i}"] = nn.LayerNorm(width) if norm else nn.Identity()
            layers[f"act{i}"] = nn.Tanh()
            fan_in = width
        layers["head"] = nn.Linear(width, 4)
        return nn.Sequential(layers)
