"""A layer whose ``_load_from_state_dict`` rejects the checkpoint with a reason (as versioned custom layers do):
``load_state_dict`` raises a RuntimeError whose *second* line says why."""

import torch
from torch import nn

REASON = "checkpoint format v1 is not supported, convert it to v2 first"


class Versioned(nn.Linear):
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs):
        error_msgs.append(f"{prefix}weight: {REASON}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, error_msgs)


def build_model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(Versioned(8, 8), nn.ReLU(), nn.Linear(8, 4))
