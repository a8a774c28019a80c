"""The remedy operators gradscope suggests and applies (where they go is decided in ``placement``)."""

from __future__ import annotations

from .pseudonorm import PseudoNorm, pseudo_norm, reference_scale
from .rescale import (
    Rescale,
    apply_rescale,
    remove_rescale,
    rescale_gain,
    rescale_layers,
    weight_penalty,
)

__all__ = [
    "PseudoNorm",
    "pseudo_norm",
    "reference_scale",
    "Rescale",
    "apply_rescale",
    "remove_rescale",
    "rescale_gain",
    "rescale_layers",
    "weight_penalty",
]
