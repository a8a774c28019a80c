"""A watched training run as data: the JSONL log ``gradscope.watch`` writes, read back into steps, a layers × steps
matrix, the first step at which each layer went bad, and the same ``Report`` that ``scan`` returns.

Log format (``gradscope.watch/1``), one JSON object per recorded step, one line each::

    {"step": 0, "loss": 2.3, "layers": [{"name": "0", "type": "Linear", "grad_rms": ..., "signal_rms": ...,
      "activation_rms": ..., "activation_std": ..., "saturated_fraction": ..., "dead_fraction": ...,
      "weight_rms": ...}], "meta": {...}}

``meta`` (first line only) holds what does not change over the run: schema, model class, mode, every, world size,
and per layer its type, forward order, parameter count, dtypes and the few constructor numbers the rules read
(``in_features``, ``kernel_size``, ...). Non-finite numbers are written as ``null`` and listed by name in the
layer's ``"nonfinite"`` key, so a NaN is never confused with "not measured".

The reader skips lines that do not parse (a run killed mid-write can leave at most its last line torn) and counts
them in ``Run.skipped_lines``.

``build_report`` is the one place a Report is made from recorded steps, for ``Watch.report()`` in the training
process and for ``gradscope report`` from the log: the per-layer numbers are the median over the last ``window``
recorded steps (the same median-over-batches that ``scan`` uses), diagnosed and advised by ``diagnose``/``suggest``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .results import Report

SCHEMA = "gradscope.watch/1"
STATS = ("grad_rms", "signal_rms", "activation_rms", "activation_std", "saturated_fraction", "dead_fraction")
EVENTS = ("nonfinite", "exploding", "vanishing")  # the statuses whose first step the timeline reports
DEFAULT_WINDOW = 8
# Constructor numbers the rules and the advice read from a module (fan-in, saturation bounds).
_ATTRS = (
    "in_features",
    "out_features",
    "in_channels",
    "out_channels",
    "kernel_size",
    "groups",
    "min_val",
    "max_val",
    "negative_slope",
    "num_embeddings",
    "embedding_dim",
    "hidden_size",
    "num_layers",
)


@dataclass(frozen=True)
class LayerMeta:
    name: str
    type: str  # the module's class name
    kind: str  # the nearest torch.nn class in its MRO ("Module" when none): what a stand-in is built as
    order: int
    output_shape: tuple[int, ...] | None
    parameters: int
    trainable: bool
    shares_parameters_with: str | None
    output_needs_grad: bool
    grad_dtype: str | None
    signal_dtype: str | None
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "kind": self.kind,
            "order": self.order,
            "output_shape": None if self.output_shape is None else list(self.output_shape),
            "parameters": self.parameters,
            "trainable": self.trainable,
            "shares_parameters_with": self.shares_parameters_with,
            "output_needs_grad": self.output_needs_grad,
            "grad_dtype": self.grad_dtype,
            "signal_dtype": self.signal_dtype,
            "attrs": dict(self.attrs),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerMeta:
        shape = d.get("output_shape")
        return cls(
            name=str(d["name"]),
            type=str(d.get("type", "Module")),
            kind=str(d.get("kind", "Module")),
            order=int(d.get("order", -1)),
            output_shape=None if shape is None else tuple(int(x) for x in shape),
            parameters=int(d.get("parameters", 0)),
            trainable=bool(d.get("trainable", False)),
            shares_parameters_with=d.get("shares_parameters_with"),
            output_needs_grad=bool(d.get("output_needs_grad", False)),
            grad_dtype=d.get("grad_dtype"),
            signal_dtype=d.get("signal_dtype"),
            attrs=dict(d.get("attrs") or {}),
        )


@dataclass(frozen=True)
class Step:
    """One recorded training step: per layer name, each statistic (NaN = non-finite, absent = not measured)."""

    step: int
    layers: Mapping[str, Mapping[str, float]]
    weight_rms: Mapping[str, float]
    loss: float | None = None

    def to_json(self, meta: Mapping[str, Any] | None, types: Mapping[str, str]) -> str:
        layers = []
        for name, stats in self.layers.items():
            entry: dict[str, Any] = {"name": name, "type": types.get(name)}
            bad = []
            for stat in STATS:
                value = stats.get(stat)
                if value is not None and not math.isfinite(value):
                    bad.append(stat)
                    value = None
                entry[stat] = value
            w = self.weight_rms.get(name)
            entry["weight_rms"] = w if w is not None and math.isfinite(w) else None
            if bad:
                entry["nonfinite"] = bad
            layers.append(entry)
        obj: dict[str, Any] = {"step": self.step, "loss": _finite(self.loss), "layers": layers}
        if self.loss is not None and not math.isfinite(self.loss):
            obj["loss_nonfinite"] = True
        if meta is not None:
            obj["meta"] = dict(meta)
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> Step:
        layers: dict[str, dict[str, float]] = {}
        weights: dict[str, float] = {}
        for entry in obj.get("layers", []):
            name = str(entry["name"])
            bad = set(entry.get("nonfinite", ()))
            stats: dict[str, float] = {}
            for stat in STATS:
                value = entry.get(stat)
                if stat in bad:
                    stats[stat] = math.nan
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    stats[stat] = float(value)
            layers[name] = stats
            if isinstance(entry.get("weight_rms"), (int, float)):
                weights[name] = float(entry["weight_rms"])
        loss = obj.get("loss")
        if obj.get("loss_nonfinite"):
            loss = math.nan
        return cls(int(obj["step"]), layers, weights, None if loss is None else float(loss))


@dataclass(frozen=True)
class Run:
    meta: Mapping[str, Any]
    layers: tuple[LayerMeta, ...]
    steps: tuple[Step, ...]
    skipped_lines: int = 0
    source: str = ""

    def matrix(self, stat: str | None = None) -> tuple[str, list[str], list[list[float | None]]]:
        """(stat, layer names, rows of values per recorded step). Default: ``signal_rms`` where the run measured
        it (mode full), else ``grad_rms``. Layers with no value at any step are left out."""
        if stat is None:
            has_signal = any("signal_rms" in s for step in self.steps for s in step.layers.values())
            stat = "signal_rms" if has_signal else "grad_rms"
        names: list[str] = []
        rows: list[list[float | None]] = []
        for layer in self.layers:
            row = [step.layers.get(layer.name, {}).get(stat) for step in self.steps]
            if any(v is not None for v in row):
                names.append(layer.name)
                rows.append(row)
        return stat, names, rows


class LogError(ValueError):
    pass


def read_log(path: str | Path) -> Run:
    """Read a watch log. Raises ``ConfigError`` when the file is missing or holds no recorded step."""
    from .errors import ConfigError

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_log(text.splitlines(), source=str(path))


def parse_log(lines: Iterable[str], source: str = "") -> Run:
    from .errors import ConfigError

    meta: dict[str, Any] | None = None
    steps: dict[int, Step] = {}
    skipped = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict) or not isinstance(obj.get("step"), int):
                raise ValueError
            step = Step.from_obj(obj)
        except (ValueError, KeyError, TypeError):
            skipped += 1
            continue
        if meta is None and isinstance(obj.get("meta"), dict):
            meta = obj["meta"]
        steps[step.step] = step  # a step written twice (a resumed run): the later one wins
    if not steps:
        raise ConfigError(f"{source or 'the log'}: no recorded step in it (is it a gradscope watch log?)")
    ordered = tuple(steps[k] for k in sorted(steps))
    meta = meta or {}
    layers = tuple(LayerMeta.from_dict(d) for d in meta.get("layers", []))
    if not layers:  # no meta line survived: layers as they appear in the steps, types unknown
        seen: dict[str, None] = {}
        for s in ordered:
            for name in s.layers:
                seen.setdefault(name, None)
        layers = tuple(
            LayerMeta(n, "Module", "Module", i, None, 1, True, None, False, None, None) for i, n in enumerate(seen)
        )
    return Run(meta, layers, ordered, skipped, source)


# -- Report ----------------------------------------------------------------------------------------------------
def standin(meta: LayerMeta) -> Any:
    """A module of the layer's torch.nn kind carrying its constructor numbers, without parameters: enough for the
    rules and the advice, which read the class and ``in_features``-like attributes, never the weights."""
    from torch import nn

    cls = getattr(nn, meta.kind, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        cls = nn.Module
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    for key, value in meta.attrs.items():
        object.__setattr__(module, key, tuple(value) if isinstance(value, list) else value)
    return module


def build_report(
    run: Run,
    *,
    window: int = DEFAULT_WINDOW,
    config: Any = None,
    modules: Mapping[str, Any] | None = None,
    target: str | None = None,
    upto: int | None = None,
) -> Report:
    """The Report of the last ``window`` recorded steps (up to step ``upto``), like ``scan`` makes from batches."""
    import torch

    from .advice import suggest
    from .config import Config
    from .diagnose import diagnose
    from .results import ModelInfo, ProbeInfo, Report

    config = config or Config()
    steps = [s for s in run.steps if upto is None or s.step <= upto][-window:]
    records = _records(run.layers, steps, modules or {}, torch)
    diagnosis = diagnose(records, config.diagnose)
    suggestions = suggest(diagnosis, records, config)
    meta = run.meta
    return Report(
        model=ModelInfo(
            target or str(meta.get("target") or meta.get("model") or "model"),
            str(meta.get("model", "Module")),
            int(meta.get("parameters", 0)),
            int(meta.get("trainable_parameters", 0)),
        ),
        probe=ProbeInfo(
            batches=len(steps),
            batch_size=meta.get("batch_size"),
            seed=0,
            loss=f"training loss, steps {steps[0].step}–{steps[-1].step}" if steps else "training loss",
            device=str(meta.get("device", "cpu")),
            dtype=str(meta.get("dtype", "float32")),
        ),
        layers=diagnosis.layers,
        findings=diagnosis.findings,
        suggestions=suggestions,
        summary=diagnosis.summary,
        timing={"steps": float(len(steps))},
    )


def _records(layers: Sequence[LayerMeta], steps: Sequence[Step], modules: Mapping[str, Any], torch: Any) -> list[Any]:
    from .recorder import LayerRecord

    records = []
    for meta in sorted(layers, key=lambda m: (m.order < 0, m.order)):
        params = [torch.empty(meta.parameters, device="meta")] if meta.parameters else []
        values = {
            stat: [s.layers[meta.name][stat] for s in steps if meta.name in s.layers and stat in s.layers[meta.name]]
            for stat in STATS
        }
        weights = [s.weight_rms[meta.name] for s in steps if meta.name in s.weight_rms]
        records.append(
            LayerRecord(
                name=meta.name,
                module=modules.get(meta.name) or standin(meta),
                params=params,
                trainable=params if meta.trainable else [],
                shares_parameters_with=meta.shares_parameters_with,
                order=meta.order,
                output_shape=meta.output_shape,
                weight_rms=weights[-1] if weights else None,
                grad_rms=values["grad_rms"],
                signal_rms=values["signal_rms"],
                activation_rms=values["activation_rms"],
                activation_std=values["activation_std"],
                saturated_fraction=values["saturated_fraction"],
                dead_fraction=values["dead_fraction"],
                output_needs_grad=meta.output_needs_grad,
                grad_dtype=_dtype(meta.grad_dtype, torch),
                signal_dtype=_dtype(meta.signal_dtype, torch),
            )
        )
    return records


def _dtype(name: str | None, torch: Any) -> Any:
    if not name:
        return None
    value = getattr(torch, name.replace("torch.", ""), None)
    return value if isinstance(value, torch.dtype) else None


def first_events(run: Run, config: Any = None) -> dict[str, dict[str, int]]:
    """Per layer, the first recorded step at which it was judged nonfinite / exploding / vanishing (each step
    diagnosed on its own, by the same rules as ``scan``)."""
    from .results import Status

    first: dict[str, dict[str, int]] = {}
    for step in run.steps:
        report = build_report(run, window=1, config=config, upto=step.step)
        for layer in report.layers:
            if layer.status in (Status.NONFINITE, Status.EXPLODING, Status.VANISHING):
                first.setdefault(layer.name, {}).setdefault(layer.status.value, step.step)
    return first


def layer_meta(
    name: str,
    module: Any,
    *,
    order: int,
    output_shape: tuple[int, ...] | None,
    parameters: int,
    trainable: bool,
    shares: str | None,
    output_needs_grad: bool,
    grad_dtype: Any,
    signal_dtype: Any,
) -> LayerMeta:
    from torch import nn

    kind = "Module"
    for cls in type(module).__mro__:
        if getattr(nn, cls.__name__, None) is cls:
            kind = cls.__name__
            break
    attrs: dict[str, Any] = {}
    for key in _ATTRS:
        value = getattr(module, key, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attrs[key] = value
        elif isinstance(value, tuple) and all(isinstance(v, int) for v in value):
            attrs[key] = list(value)
    return LayerMeta(
        name,
        type(module).__name__,
        kind,
        order,
        output_shape,
        parameters,
        trainable,
        shares,
        output_needs_grad,
        None if grad_dtype is None else str(grad_dtype).replace("torch.", ""),
        None if signal_dtype is None else str(signal_dtype).replace("torch.", ""),
        attrs,
    )


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
