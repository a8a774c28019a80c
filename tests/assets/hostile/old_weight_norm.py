"""A collapsing sigmoid stack (so ``--fix`` has work to do) with the old-style ``torch.nn.utils.weight_norm`` on
its first layer (deprecated, still common in audio models): ``copy.deepcopy`` refuses it after a forward."""

import warnings

import torch
from torch import nn


def build_model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers: list[nn.Module] = [nn.Linear(8, 8)]
        for _ in range(12):
            layers += [nn.Sigmoid(), nn.Linear(8, 8)]
        model = nn.Sequential(*layers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FutureWarning: use torch.nn.utils.parametrizations.weight_norm
        model[0] = torch.nn.utils.weight_norm(model[0])
    return model
