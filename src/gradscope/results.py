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

from ._version import __version__
from .display import Displayable
from .vocab import IN_MEMORY, Remedy, Rule, Severity, Status, Where

SCHEMA = "gradscope.report/1"
SCHEMA_PREFIX = "gradscope.report/"


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
        total = sum(values)  # NaN when any value is (the generator below is the slow exact check)
        if total != total and any(v != v for v in values):  # any NaN batch makes the layer non-finite: keep it visible
            return cls(math.nan, min((v for v in values if v == v), default=math.nan), math.nan)
        ordered = sorted(values)
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
    rule: str  # a Rule; a report read back from JSON may carry rules this version does not know
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

    @property
    def in_memory(self) -> bool:
        """Whether ``scan --fix`` and ``trial`` can apply it to a copy of the model (skip connections only around
        layer blocks, not attention over a sequence, which is new code)."""
        return self.remedy in IN_MEMORY and (self.remedy is not Remedy.RESIDUAL or "block" in self.params)


@dataclass(frozen=True)
class ModelInfo:
    target: str
    class_name: str
    parameters: int
    trainable_parameters: int
    skip_connections: bool | None = None  # None: not known (a report built from a watch log)


@dataclass(frozen=True)
class ProbeInput:
    """One input tensor of the first probe batch, in the order forward() gets them."""

    shape: tuple[int, ...]
    dtype: str  # "float32", "int64", …
    name: str | None = None  # the keyword, for a batch passed as keyword arguments (a dict)


@dataclass(frozen=True)
class ProbeInfo:
    batches: int
    batch_size: int | None  # the size of the dimension that indexes samples (dimension 1 for sequence-first inputs)
    seed: int
    loss: str
    device: str
    dtype: str
    optimizer: str = "adam"  # the optimizer the verdict assumes (diagnose.optimizer)
    inputs: tuple[ProbeInput, ...] = ()  # every input tensor of the first batch; empty when not known
    assumed: tuple[str, ...] = ()  # what synthetic inputs took for granted, one sentence each


@dataclass(frozen=True)
class Summary:
    reference_grad_rms: float | None  # median grad RMS of the output-side layers: the model's own yardstick
    worst_layer: str | None
    worst_ratio: float | None  # worst layer's grad RMS / reference
    decay_per_layer: float | None  # fitted log10 change of grad RMS per parametric layer, input → output
    forward_spread_ratio: float | None  # activation std of the deepest layers / first layer


@dataclass(frozen=True)
class Positions:
    """How much gradient reaches each input position of a sequence model (``∂loss/∂(output of layer)`` along
    ``axis``): flat for attention, decaying toward the start for a recurrent layer read at its last step."""

    layer: str
    axis: int
    grad_rms: tuple[float, ...]  # per position, median over the probe batches
    ratio: float | None  # RMS at the weaker end of the sequence over the stronger end (first vs last eighth)
    weak_end: str | None  # "start" or "end"


@dataclass(frozen=True)
class Fix:
    applied: tuple[Suggestion, ...]
    report: Report  # the patched model's scan, over the same probe batches
    skipped: tuple[tuple[Suggestion, str], ...] = ()  # not applicable in memory, and why
    # the change to make in the model's code: several lines, each shown cleaned (``util.displayed``)
    code: str = field(default="", metadata={"lines": True})


@dataclass(frozen=True)
class Report(Displayable):
    """What a scan found. Shows itself as the HTML report in Jupyter and as the terminal report in rich."""

    model: ModelInfo
    probe: ProbeInfo
    layers: tuple[LayerStats, ...]
    findings: tuple[Finding, ...]
    suggestions: tuple[Suggestion, ...]
    summary: Summary
    fix: Fix | None = None
    positions: Positions | None = None
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

    @classmethod
    def from_dict(cls, data: Any) -> Report:
        """The Report that ``to_dict()`` wrote, checking every key it reads; raises ``SchemaError`` with a
        one-line reason (``layers[3].status 'fine' is not one of ...``). ``timing`` is kept, never interpreted."""
        return _parse_report(data)

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
                    "skip_connections": self.model.skip_connections,
                },
                "probe": {
                    "batches": self.probe.batches,
                    "batch_size": self.probe.batch_size,
                    "seed": self.probe.seed,
                    "loss": self.probe.loss,
                    "device": self.probe.device,
                    "dtype": self.probe.dtype,
                    "optimizer": self.probe.optimizer,
                    **_probe_inputs_dict(self.probe),
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
                "positions": None if self.positions is None else _positions_dict(self.positions),
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


def _positions_dict(p: Positions) -> dict[str, Any]:
    return {"layer": p.layer, "axis": p.axis, "grad_rms": list(p.grad_rms), "ratio": p.ratio, "weak_end": p.weak_end}


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


# ------------------------------------------------------------------------------------------ reading back


class SchemaError(ValueError):
    """A JSON document that is not a valid ``gradscope.report/1`` report; the message says where and why."""


_NUM = (int, float)
_COMPARED = ("grad_rms", "signal_rms")  # per-layer keys every report has (null when not measured)


def _parse_report(data: Any) -> Report:
    if not isinstance(data, Mapping) or "schema" not in data:
        kind = "an object without a 'schema' key" if isinstance(data, Mapping) else _article(type(data).__name__)
        raise SchemaError(f"not a gradscope report (the JSON is {kind})")
    schema = data["schema"]
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        raise SchemaError(f"not a gradscope report (schema {schema!r}, expected {SCHEMA!r})")
    if schema != SCHEMA:
        raise SchemaError(f"schema {schema!r} is not supported by gradscope {__version__}, which reads {SCHEMA!r}")
    try:
        return _report(data)
    except SchemaError as exc:
        raise SchemaError(f"not a valid {SCHEMA} report: {exc}") from None


def _article(kind: str) -> str:
    name = {"list": "list", "str": "string", "int": "number", "float": "number", "NoneType": "null"}.get(kind, kind)
    return f"a {'boolean' if kind == 'bool' else name}"


def _get(obj: Mapping[str, Any], key: str, kinds: tuple[type, ...], where: str, *, optional: bool = False) -> Any:
    if key not in obj:
        if optional:
            return None
        raise SchemaError(f"{where} has no {key!r}")
    value = obj[key]
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise SchemaError(f"{where}.{key} must be {_kinds(kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise SchemaError(f"{where}.{key} must be {_kinds(kinds)}, got {_short(value)}")
    return value


def _kinds(kinds: tuple[type, ...]) -> str:
    if kinds == _NUM:
        return "a number"
    names = {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list",
             dict: "an object", Mapping: "an object"}  # fmt: skip
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _short(value: Any) -> str:
    import json

    text = json.dumps(value) if not isinstance(value, Mapping) else "an object"
    return text if len(text) <= 40 else text[:37] + "..."


def _number(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    value = _get(obj, key, _NUM, where, optional=True)
    return None if value is None else float(value)


def _magnitude(obj: Mapping[str, Any], key: str, where: str, *, high: float = math.inf) -> float | None:
    """A number no scan writes below 0 (an RMS, a fraction: ``high`` 1): a negative one is a hand edit."""
    value = _number(obj, key, where)
    if value is not None and not 0 <= value <= high:
        bounds = ">= 0" if high == math.inf else f"in [0, {high:g}]"
        raise SchemaError(f"{where}.{key} must be {bounds}, got {value!r}")
    return value


def _spread(obj: Mapping[str, Any], key: str, where: str) -> Spread | None:
    median = _magnitude(obj, key, where)
    rng = obj.get(f"{key}_range")
    lo = hi = median
    if rng is not None:
        if not (
            isinstance(rng, list)
            and len(rng) == 2
            and all(v is None or (isinstance(v, _NUM) and not isinstance(v, bool) and v >= 0) for v in rng)
        ):
            raise SchemaError(f"{where}.{key}_range must be [min, max] of numbers >= 0")
        lo = None if rng[0] is None else float(rng[0])
        hi = None if rng[1] is None else float(rng[1])
    if median is None and rng is None:
        return None
    nan = math.nan
    return Spread(nan if median is None else median, nan if lo is None else lo, nan if hi is None else hi)


def _probe_inputs_dict(probe: ProbeInfo) -> dict[str, Any]:
    """``inputs`` and ``assumed``, each only when there is something to say (reports of watched training and
    hand-built reports have neither)."""
    found: dict[str, Any] = {}
    if probe.inputs:
        found["inputs"] = [
            {"shape": list(i.shape), "dtype": i.dtype, **({"name": i.name} if i.name is not None else {})}
            for i in probe.inputs
        ]
    if probe.assumed:
        found["assumed"] = list(probe.assumed)
    return found


def _probe_inputs(probe: Mapping[str, Any]) -> tuple[ProbeInput, ...]:
    raw = _get(probe, "inputs", (list,), "probe", optional=True) or []
    inputs = []
    for i, item in enumerate(raw):
        where = f"probe.inputs[{i}]"
        if not isinstance(item, Mapping):
            raise SchemaError(f"{where} must be an object")
        shape = _get(item, "shape", (list,), where)
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise SchemaError(f"{where}.shape must be a list of integers")
        name = _get(item, "name", (str,), where, optional=True)
        inputs.append(ProbeInput(tuple(shape), _get(item, "dtype", (str,), where), name))
    return tuple(inputs)


def _strings(obj: Mapping[str, Any], key: str, where: str) -> list[str]:
    values = _get(obj, key, (list,), where, optional=True) or []
    if not all(isinstance(v, str) for v in values):
        raise SchemaError(f"{where}.{key} must be a list of strings")
    return list(values)


def _report(data: Mapping[str, Any]) -> Report:
    model = _get(data, "model", (Mapping,), "report")
    probe = _get(data, "probe", (Mapping,), "report")
    layers_raw = _get(data, "layers", (list,), "report")
    findings_raw = _get(data, "findings", (list,), "report")
    suggestions_raw = _get(data, "suggestions", (list,), "report", optional=True) or []
    summary = _get(data, "summary", (Mapping,), "report", optional=True) or {}
    timing = _get(data, "timing", (Mapping,), "report", optional=True) or {}
    fix = _get(data, "fix", (Mapping,), "report", optional=True)
    layers = tuple(_layer(item, i) for i, item in enumerate(layers_raw))
    seen: set[str] = set()
    for layer in layers:
        if layer.name in seen:
            raise SchemaError(f"layer name {layer.name!r} appears twice")
        seen.add(layer.name)
    return Report(
        model=ModelInfo(
            target=_get(model, "target", (str,), "model"),
            class_name=_get(model, "class", (str,), "model"),
            parameters=_get(model, "parameters", (int,), "model"),
            trainable_parameters=_get(model, "trainable_parameters", (int,), "model"),
            skip_connections=_get(model, "skip_connections", (bool,), "model", optional=True),
        ),
        probe=ProbeInfo(
            batches=_get(probe, "batches", (int,), "probe"),
            batch_size=_get(probe, "batch_size", (int,), "probe", optional=True),
            seed=_get(probe, "seed", (int,), "probe"),
            loss=_get(probe, "loss", (str,), "probe"),
            device=_get(probe, "device", (str,), "probe"),
            dtype=_get(probe, "dtype", (str,), "probe"),
            optimizer=_get(probe, "optimizer", (str,), "probe", optional=True) or "adam",
            inputs=_probe_inputs(probe),
            assumed=tuple(_strings(probe, "assumed", "probe")),
        ),
        layers=layers,
        findings=tuple(_finding(item, i) for i, item in enumerate(findings_raw)),
        suggestions=_suggestions(suggestions_raw),
        summary=Summary(
            reference_grad_rms=_number(summary, "reference_grad_rms", "summary"),
            worst_layer=_get(summary, "worst_layer", (str,), "summary", optional=True),
            worst_ratio=_number(summary, "worst_ratio", "summary"),
            decay_per_layer=_number(summary, "decay_per_layer", "summary"),
            forward_spread_ratio=_number(summary, "forward_spread_ratio", "summary"),
        ),
        fix=None if fix is None else _fix(fix),
        positions=_positions(data.get("positions")),
        timing={str(k): v for k, v in timing.items() if isinstance(v, _NUM) and not isinstance(v, bool)},
    )


def _positions(data: Any) -> Positions | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise SchemaError("positions must be an object")
    values = _get(data, "grad_rms", (list,), "positions")
    if not all(v is None or (isinstance(v, _NUM) and not isinstance(v, bool)) for v in values):
        raise SchemaError("positions.grad_rms must be a list of numbers")
    return Positions(
        layer=_get(data, "layer", (str,), "positions"),
        axis=_get(data, "axis", (int,), "positions"),
        grad_rms=tuple(math.nan if v is None else float(v) for v in values),
        ratio=_number(data, "ratio", "positions"),
        weak_end=_get(data, "weak_end", (str,), "positions", optional=True),
    )


def _layer(item: Any, i: int) -> LayerStats:
    where = f"layers[{i}]"
    if not isinstance(item, Mapping):
        raise SchemaError(f"{where} must be an object, got {_short(item)}")
    name = _get(item, "name", (str,), where)
    status = _get(item, "status", (str,), where)
    try:
        parsed_status = Status(status)
    except ValueError:
        raise SchemaError(f"{where}.status {status!r} is not one of {', '.join(s.value for s in Status)}") from None
    for key in _COMPARED:  # what a baseline comparison reads: a layer without it is not a scan's
        if key not in item:
            raise SchemaError(f"{where} has no {key!r}")
    shape = _get(item, "output_shape", (list,), where, optional=True)
    if shape is not None and not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise SchemaError(f"{where}.output_shape must be a list of integers")
    return LayerStats(
        index=_get(item, "index", (int,), where),
        name=name,
        type=_get(item, "type", (str,), where),
        depth=0 if not name else name.count(".") + 1,
        output_shape=None if shape is None else tuple(shape),
        parameters=_get(item, "parameters", (int,), where, optional=True) or 0,
        trainable=bool(_get(item, "trainable", (bool,), where, optional=True)),
        grad_rms=_spread(item, "grad_rms", where),
        signal_rms=_spread(item, "signal_rms", where),
        activation_rms=_spread(item, "activation_rms", where),
        activation_std=_spread(item, "activation_std", where),
        weight_rms=_magnitude(item, "weight_rms", where),
        saturated_fraction=_magnitude(item, "saturated_fraction", where, high=1.0),
        dead_fraction=_magnitude(item, "dead_fraction", where, high=1.0),
        status=parsed_status,
        shares_parameters_with=_get(item, "shares_parameters_with", (str,), where, optional=True),
    )


def _finding(item: Any, i: int) -> Finding:
    where = f"findings[{i}]"
    if not isinstance(item, Mapping):
        raise SchemaError(f"{where} must be an object, got {_short(item)}")
    severity = _get(item, "severity", (str,), where)
    try:
        parsed = Severity(severity)
    except ValueError:
        raise SchemaError(f"{where}.severity {severity!r} is not error, warning or info") from None
    layers = _get(item, "layers", (list,), where)
    if not all(isinstance(n, str) for n in layers):
        raise SchemaError(f"{where}.layers must be a list of layer names")
    rule = _get(item, "rule", (str,), where)
    return Finding(
        rule=Rule(rule) if rule in Rule.__members__.values() else rule,
        severity=parsed,
        layers=tuple(layers),
        message=_get(item, "message", (str,), where, optional=True) or "",
        evidence=dict(_get(item, "evidence", (Mapping,), where, optional=True) or {}),
    )


def _suggestion(item: Any) -> Suggestion | None:
    # Suggestions are shown, never compared: a remedy this version does not know is skipped, not an error.
    if not isinstance(item, Mapping):
        return None
    try:
        return Suggestion(
            remedy=Remedy(str(item.get("remedy"))),
            layers=tuple(str(n) for n in item.get("layers") or ()),
            where=Where(str(item.get("where"))),
            params=dict(item.get("params") or {}),
            reason=str(item.get("reason") or ""),
            rules=tuple(str(r) for r in item.get("rules") or ()),
        )
    except (ValueError, TypeError):
        return None


def _suggestions(items: list[Any]) -> tuple[Suggestion, ...]:
    return tuple(s for item in items if (s := _suggestion(item)) is not None)


def _fix(data: Mapping[str, Any]) -> Fix:
    skipped = [(s, str(item.get("why", ""))) for item in data.get("skipped") or () if (s := _suggestion(item))]
    return Fix(
        applied=_suggestions(list(data.get("applied") or ())),
        report=_parse_report(data.get("report")),
        skipped=tuple(skipped),
        code=str(data.get("code") or ""),
    )
