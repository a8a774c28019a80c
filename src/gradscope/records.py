"""What the recorder knows of a layer, as plain data: its facts (what kind of layer it is) and its numbers.

``diagnose`` and ``advice`` read only this, never an ``nn.Module``, so the watch timeline can rebuild the same
records from a log and get the same findings. No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any


class LayerKind(StrEnum):
    LINEAR = "linear"  # nn.Linear, nn.Bilinear
    CONV = "conv"  # nn.Conv1d/2d/3d and their transposes
    EMBEDDING = "embedding"
    NORM = "norm"  # BatchNorm, LayerNorm, GroupNorm, ...
    RECURRENT = "recurrent"  # nn.RNN, nn.LSTM, nn.GRU
    ATTENTION = "attention"  # nn.MultiheadAttention
    ACTIVATION = "activation"  # an elementwise activation module
    OTHER = "other"


WEIGHTED_KINDS = frozenset({LayerKind.LINEAR, LayerKind.CONV})


@dataclass(frozen=True)
class LayerFacts:
    """What kind of layer this is, read once from the module (``torchutil.layer_facts``) or from a watch log."""

    name: str  # qualified name from named_modules()
    type: str  # the module's class name
    kind: LayerKind = LayerKind.OTHER
    parameters: int = 0  # own parameters counted here (tied ones only at their first owner)
    trainable: bool = False  # owns parameters that require grad
    shares_parameters_with: str | None = None  # tied weights: the layer the parameter is counted under
    fan_in: int | None = None  # inputs per output unit of a weighted layer
    out_features: int | None = None  # output units / channels of a weighted layer
    conv_dims: int | None = None  # 1, 2 or 3 for a convolution
    activation: str | None = None  # the torch.nn activation class it is or derives from ("Tanh", "ReLU", ...)
    saturating: bool = False  # flat on both sides: tanh, sigmoid, hardtanh, softsign, hardsigmoid
    rectifying: bool = False  # zero for negative inputs: ReLU, ReLU6
    gain: float | None = None  # nn.init.calculate_gain for the activation, where torch defines one
    cell: str | None = None  # "RNN", "LSTM" or "GRU" for a recurrent layer
    container: bool = False  # it has child modules: its output is theirs, combined (the root, a block with a gain)

    @property
    def weighted(self) -> bool:
        return self.kind in WEIGHTED_KINDS

    @property
    def owns_parameters(self) -> bool:
        return self.parameters > 0

    @property
    def is_activation(self) -> bool:
        """A layer without parameters of its own (an activation module): judged by its output gradient."""
        return not self.parameters and not self.shares_parameters_with

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:  # a compact log line: defaults are implied
                out[f.name] = value.value if isinstance(value, StrEnum) else value
        out["name"] = self.name
        out["type"] = self.type
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerFacts:
        """The inverse of ``to_dict``; raises ``ValueError`` naming the key on a wrong type."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data or data[f.name] is None:
                continue
            value = data[f.name]
            if f.name == "kind":
                value = LayerKind(value)
            elif f.name in ("name", "type", "shares_parameters_with", "activation", "cell"):
                if not isinstance(value, str):
                    raise ValueError(f"layer fact {f.name!r} must be a string, got {value!r}")
            elif f.name in ("saturating", "rectifying", "trainable", "container"):
                value = bool(value)
            elif f.name == "gain":
                value = _number(value, f.name)
            else:
                value = int(_number(value, f.name))
            kwargs[f.name] = value
        if "name" not in kwargs:
            raise ValueError("layer facts have no 'name'")
        kwargs.setdefault("type", "Module")
        return cls(**kwargs)


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"layer fact {key!r} must be a finite number, got {value!r}")
    return float(value)


# The smallest normal number of each floating dtype, by name: below it a gradient has lost precision (underflow).
SMALLEST_NORMAL: dict[str, float] = {
    "float16": 6.103515625e-05,
    "bfloat16": 1.1754943508222875e-38,
    "float32": 1.1754943508222875e-38,
    "float64": 2.2250738585072014e-308,
}


@dataclass
class LayerRecord:
    """One layer's facts, what its forward pass showed (order, output shape, dtypes) and its per-batch numbers."""

    facts: LayerFacts
    order: int = -1  # first forward call in batch 0; -1 when it never ran
    output_shape: tuple[int, ...] | None = None
    output_needs_grad: bool = False
    grad_dtype: str | None = None  # "float32", ...
    signal_dtype: str | None = None
    weight_rms: float | None = None
    grad_rms: list[float] = field(default_factory=list)
    signal_rms: list[float] = field(default_factory=list)
    activation_rms: list[float] = field(default_factory=list)
    activation_std: list[float] = field(default_factory=list)
    saturated_fraction: list[float] = field(default_factory=list)
    dead_fraction: list[float] = field(default_factory=list)
    grad_missing: int = 0  # batches where trainable parameters had no .grad after backward
    signal_missing: int = 0  # batches where the output needed a gradient and none arrived
    # every own parameter that got a gradient in batch 0 is only added or joined (a class token, a position table:
    # torchutil.AutogradGraph.additive_parameters): its gradient's size is no evidence of vanishing or exploding
    additive: bool = False

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def type_name(self) -> str:
        return self.facts.type


@dataclass
class PositionProfile:
    """The gradient reaching each input position: per batch, the RMS of ∂loss/∂(output of ``layer``) at each
    position along ``axis`` of that output (the first layer to run, when its output is a sequence)."""

    layer: str
    axis: int
    length: int
    rms: list[list[float]] = field(default_factory=list)


@dataclass(frozen=True)
class Gate:
    """A parameter closed at init by design (tiny or zero next to its nominal scale) whose own gradient is healthy."""

    parameter: str  # qualified parameter name, e.g. "stages.0.1.gamma"
    rms: float  # its RMS at init
    grad_ratio: float  # its gradient's RMS over the scan's reference


@dataclass(frozen=True)
class Gating:
    """Gates found, and the layers whose findings disappear when they are opened: the small gradients there are the
    design, not a defect (``diagnose`` gives those layers the status ``gated``)."""

    gates: tuple[Gate, ...]
    layers: frozenset[str]  # every layer whose finding the gates explain
    quiet: frozenset[str]  # those whose own gradient the gates make small, zero or large: not the reference
    owners: frozenset[str]  # the layers that own the gates: their outputs are ~0 by design, not collapsed
    explains: tuple[str, ...]  # the rules whose findings the gates explain
    # rules still found with the gates opened, and their severity then: the gates explain any excess
    persisting: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ModelShape:
    """What the model's graph has: the advice never suggests what is already there."""

    skip_connections: bool = False  # a tensor added to a transform of itself (x + f(x))
    ignored_outputs: int = 0  # output tensors with a gradient path that the default loss leaves out
    additive: frozenset[int] = frozenset()  # ids of the parameters that are only added or joined
