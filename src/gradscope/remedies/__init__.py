"""Remedies gradscope can suggest and apply: the operators themselves (placement and patching live beside them)."""

from __future__ import annotations

from .pseudonorm import PseudoNorm, pseudo_norm
from .rescale import Rescale, apply_rescale, remove_rescale, rescale_gain, rescale_layers, weight_penalty

__all__ = [
    "PseudoNorm",
    "pseudo_norm",
    "Rescale",
    "apply_rescale",
    "remove_rescale",
    "rescale_gain",
    "rescale_layers",
    "weight_penalty",
]
