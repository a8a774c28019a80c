"""A collapsing sigmoid stack (so ``--fix`` has work to do) whose first layer is pruned with
``torch.nn.utils.prune``: after a forward its ``weight`` is a non-leaf tensor, which ``copy.deepcopy`` refuses."""

import torch
from torch import nn
from torch.nn.utils import prune


def build_model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers: list[nn.Module] = [nn.Linear(8, 8)]
        for _ in range(12):
            layers += [nn.Sigmoid(), nn.Linear(8, 8)]
        model = nn.Sequential(*layers)
        prune.l1_unstructured(model[0], "weight", amount=0.5)
        return model
