"""A healthy encoder/decoder pair of Linear layers: a different model from ``normed_tanh_mlp.py``.

Edge: checked against the other model's baseline, no layer name matches, which ``gradscope check`` must refuse
with one line (exit 2) rather than call every layer added and removed.
"""

import torch
from torch import nn


class EncoderDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.encoder = nn.Linear(16, 32)
            self.decoder = nn.Linear(32, 4)

    def forward(self, x):
        return self.decoder(torch.relu(self.encoder(x)))
