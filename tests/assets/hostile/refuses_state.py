"""A model whose load-state-dict pre-hook raises a ValueError with a reason."""

from typing import Any

import torch
from torch import nn

REASON = "checkpoint was saved with an incompatible tokenizer"


def _refuse(*_args: Any) -> None:
    raise ValueError(REASON)


def build_model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    model.register_load_state_dict_pre_hook(_refuse)
    return model
