"""The data a scan returns. Frozen dataclasses: renderers and the CLI read them, nothing mutates them.

``Report.to_dict()`` is the JSON contract ``gradscope.report/1`` (README, "JSON report"). This module must not
import torch: the CLI's ``--help`` path and renderers use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SCHEMA = "gradscope.report/1"


class Status(StrEnum):
    """What a layer's numbers say. One per layer; the most serious one wins (see ``STATUS_PRIORITY``)."""

    OK = "ok"
    VANISHING = "vanishing"
    EXPLODING = "exploding"
    NONFINITE = "nonfinite"
    FROZEN = "frozen"  # every own parameter has requires_grad=False
    DISCONNECTED = "disconnected"  # no gradient reached the layer at all
    ZERO = "zero"  # a gradient reached the layer and it is exactly zero
    SATURATED = "saturated"
    DEAD = "dead"
    UNDERFLOW = "underflow"  # below the smallest normal number of the gradient's dtype


# Earlier wins when several apply: a non-finite layer is reported as such even if it also looks saturated.
STATUS_PRIORITY: tuple[Status, ...] = (
    Status.NONFINITE,
    Status.FROZEN,
    Status.DISCONNECTED,
    Status.ZERO,
    Status.UNDERFLOW,
    Status.EXPLODING,
    Status.VANISHING,
    Status.SATURATED,
    Status.DEAD,
    Status.OK,
)


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}[self]


class Where(StrEnum):
    AFTER = "after"
    BEFORE = "before"
    REPLACE = "replace"
    MODEL = "model"


class Remedy(StrEnum):
    PSEUDO_NORM = "pseudo_norm"
    RESCALE = "rescale"
    REGULARIZE = "regularize"
    ACTIVATION = "activation"
    NORMALIZATION = "normalization"
    RESIDUAL = "residual"
    INIT = "init"
    CLIP = "clip"
    GATED_RECURRENT = "gated_recurrent"
    LOSS_SCALING = "loss_scaling"
    INSPECT = "inspect"


@dataclass(frozen=True)
class Spread:
    """Median over probe batches, with the smallest and largest batch value kept."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        if not values:
            return None
        ordered = sorted(values, key=lambda v: (math.isnan(v), v))
        finite_or_inf = [v for v in ordered if not math.isnan(v)]
        if len(finite_or_inf) < len(ordered):  # any NaN batch makes the layer non-finite; keep that visible
            return cls(math.nan, ordered[0], math.nan)
        mid = len(ordered) // 2
        median = ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
        return cls(median, ordered[0], ordered[-1])


@dataclass(frozen=True)
class LayerStats:
    index: int  # position in forward execution order
    name: str  # qualified name from named_modules()
    type: str  # class name
    depth: int  # nesting depth of the name (for the tree view)
    output_shape: tuple[int, ...] | None
    parameters: int  # own parameters counted for this layer (tied ones count at their first owner)
    trainable: bool
    grad_rms: Spread | None
    signal_rms: Spread | None
    activation_rms: Spread | None
    activation_std: Spread | None
    weight_rms: float | None
    saturated_fraction: float | None = None  # tanh/sigmoid-type units whose derivative is near zero
    dead_fraction: float | None = None  # ReLU-type units that are zero for every probe sample
    status: Status = Status.OK
    shares_parameters_with: str | None = None  # tied weights: the layer the parameter is counted under

    @property
    def is_parametric(self) -> bool:
        return self.parameters > 0


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    layers: tuple[str, ...]
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Suggestion:
    remedy: Remedy
    layers: tuple[str, ...]
    where: Where
    params: Mapping[str, Any]
    reason: str
    rules: tuple[str, ...] = ()  # the findings that motivate it


@dataclass(frozen=True)
class ModelInfo:
    target: str
    class_name: str
    parameters: int
    trainable_parameters: int


@dataclass(frozen=True)
class ProbeInfo:
    batches: int
    batch_size: int | None
    seed: int
    loss: str
    device: str
    dtype: str


@dataclass(frozen=True)
class Summary:
    reference_grad_rms: float | None  # median grad RMS of the output-side layers: the model's own yardstick
    worst_layer: str | None
    worst_ratio: float | None  # worst layer's grad RMS / reference
    decay_per_layer: float | None  # fitted log10 change of grad RMS per parametric layer, input → output
    forward_spread_ratio: float | None  # activation std of the deepest layers / first layer


@dataclass(frozen=True)
class Fix:
    applied: tuple[Suggestion, ...]
    report: Report  # the patched model's scan, over the same probe batches
    skipped: tuple[tuple[Suggestion, str], ...] = ()  # not applicable in memory, and why
    code: str = ""  # the change to make in the model's code


@dataclass(frozen=True)
class Report:
    model: ModelInfo
    probe: ProbeInfo
    layers: tuple[LayerStats, ...]
    findings: tuple[Finding, ...]
    suggestions: tuple[Suggestion, ...]
    summary: Summary
    fix: Fix | None = None
    timing: Mapping[str, float] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    def worst_severity(self) -> Severity | None:
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=lambda s: s.rank)

    def layer(self, name: str) -> LayerStats:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(  # type: ignore[no-any-return]
            {
                "schema": SCHEMA,
                "healthy": self.healthy,
                "model": {
                    "target": self.model.target,
                    "class": self.model.class_name,
                    "parameters": self.model.parameters,
                    "trainable_parameters": self.model.trainable_parameters,
                },
                "probe": {
                    "batches": self.probe.batches,
                    "batch_size": self.probe.batch_size,
                    "seed": self.probe.seed,
                    "loss": self.probe.loss,
                    "device": self.probe.device,
                    "dtype": self.probe.dtype,
                },
                "summary": {
                    "reference_grad_rms": self.summary.reference_grad_rms,
                    "worst_layer": self.summary.worst_layer,
                    "worst_ratio": self.summary.worst_ratio,
                    "decay_per_layer": self.summary.decay_per_layer,
                    "forward_spread_ratio": self.summary.forward_spread_ratio,
                },
                "layers": [_layer_dict(layer) for layer in self.layers],
                "findings": [
                    {
                        "rule": f.rule,
                        "severity": f.severity.value,
                        "layers": list(f.layers),
                        "message": f.message,
                        "evidence": dict(f.evidence),
                    }
                    for f in self.findings
                ],
                "suggestions": [suggestion_dict(s) for s in self.suggestions],
                **(
                    {
                        "fix": {
                            "applied": [suggestion_dict(s) for s in self.fix.applied],
                            "report": self.fix.report.to_dict(),
                            "skipped": [{**suggestion_dict(s), "why": why} for s, why in self.fix.skipped],
                            "code": self.fix.code,
                        }
                    }
                    if self.fix is not None
                    else {}
                ),
                "timing": dict(self.timing),
            }
        )


def suggestion_dict(s: Suggestion) -> dict[str, Any]:
    return {
        "remedy": s.remedy.value,
        "layers": list(s.layers),
        "where": s.where.value,
        "params": dict(s.params),
        "reason": s.reason,
        "rules": list(s.rules),
    }


def _median(s: Spread | None) -> float | None:
    return None if s is None else s.median


def _layer_dict(layer: LayerStats) -> dict[str, Any]:
    return {
        "index": layer.index,
        "name": layer.name,
        "type": layer.type,
        "output_shape": None if layer.output_shape is None else list(layer.output_shape),
        "parameters": layer.parameters,
        "trainable": layer.trainable,
        "grad_rms": _median(layer.grad_rms),
        "signal_rms": _median(layer.signal_rms),
        "activation_rms": _median(layer.activation_rms),
        "activation_std": _median(layer.activation_std),
        "weight_rms": layer.weight_rms,
        "grad_rms_range": None if layer.grad_rms is None else [layer.grad_rms.min, layer.grad_rms.max],
        "signal_rms_range": None if layer.signal_rms is None else [layer.signal_rms.min, layer.signal_rms.max],
        "saturated_fraction": layer.saturated_fraction,
        "dead_fraction": layer.dead_fraction,
        "shares_parameters_with": layer.shares_parameters_with,
        "status": layer.status.value,
    }


def json_safe(value: Any) -> Any:
    """JSON has no NaN/Inf: write them as null (the layer's status says why)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value
