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
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..records import LayerFacts, LayerKind, LayerRecord

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config
    from ..results import Report

SCHEMA = "gradscope.watch/1"
STATS = ("grad_rms", "signal_rms", "activation_rms", "activation_std", "saturated_fraction", "dead_fraction")
EVENTS = ("nonfinite", "exploding", "vanishing")  # the statuses whose first step the timeline reports
DEFAULT_WINDOW = 8


@dataclass(frozen=True)
class LayerMeta:
    """A layer as the log's first line describes it: its facts and what its forward pass showed."""

    facts: LayerFacts
    order: int
    output_shape: tuple[int, ...] | None = None
    output_needs_grad: bool = False
    grad_dtype: str | None = None
    signal_dtype: str | None = None

    @property
    def name(self) -> str:
        return self.facts.name

    def to_dict(self) -> dict[str, Any]:
        f = self.facts
        return {
            "name": f.name,
            "type": f.type,
            "order": self.order,
            "output_shape": None if self.output_shape is None else list(self.output_shape),
            "parameters": f.parameters,
            "trainable": f.trainable,
            "shares_parameters_with": f.shares_parameters_with,
            "output_needs_grad": self.output_needs_grad,
            "grad_dtype": self.grad_dtype,
            "signal_dtype": self.signal_dtype,
            "facts": f.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerMeta:
        """Raises ``ValueError``/``TypeError`` on a malformed entry (the reader names the log)."""
        facts = d.get("facts")
        shape = d.get("output_shape")
        return cls(
            facts=LayerFacts.from_dict(facts) if isinstance(facts, Mapping) else _legacy_facts(d),
            order=int(d.get("order", -1)),
            output_shape=None if shape is None else tuple(int(x) for x in shape),
            output_needs_grad=bool(d.get("output_needs_grad", False)),
            grad_dtype=_optional_str(d.get("grad_dtype")),
            signal_dtype=_optional_str(d.get("signal_dtype")),
        )

    def record(self, steps: Sequence[Step]) -> LayerRecord:
        """This layer's record over ``steps``: what ``diagnose`` reads, as ``scan`` builds it from batches."""

        def series(stat: str) -> list[float]:
            return [s.layers[self.name][stat] for s in steps if stat in s.layers.get(self.name, {})]

        weights = [s.weight_rms[self.name] for s in steps if self.name in s.weight_rms]
        return LayerRecord(
            facts=self.facts,
            order=self.order,
            output_shape=self.output_shape,
            output_needs_grad=self.output_needs_grad,
            grad_dtype=self.grad_dtype,
            signal_dtype=self.signal_dtype,
            weight_rms=weights[-1] if weights else None,
            grad_rms=series("grad_rms"),
            signal_rms=series("signal_rms"),
            activation_rms=series("activation_rms"),
            activation_std=series("activation_std"),
            saturated_fraction=series("saturated_fraction"),
            dead_fraction=series("dead_fraction"),
        )


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value).removeprefix("torch.")


# Logs written before the facts were logged name the torch.nn class and a few constructor numbers instead.
_LEGACY_KINDS = {"Linear": LayerKind.LINEAR, "Bilinear": LayerKind.LINEAR, "Embedding": LayerKind.EMBEDDING,
                 "EmbeddingBag": LayerKind.EMBEDDING, "MultiheadAttention": LayerKind.ATTENTION}  # fmt: skip


def _legacy_facts(d: Mapping[str, Any]) -> LayerFacts:
    kind_name = str(d.get("kind", "Module"))
    attrs = d.get("attrs") or {}
    kind = _LEGACY_KINDS.get(kind_name, LayerKind.OTHER)
    fan_in = attrs.get("in_features")
    conv_dims = None
    if kind_name.startswith(("Conv", "ConvTranspose")):
        kernel = list(attrs.get("kernel_size") or [1])
        kind, conv_dims = LayerKind.CONV, len(kernel)
        fan_in = int(attrs.get("in_channels", 0)) // int(attrs.get("groups", 1) or 1) * math.prod(kernel)
    activation = kind_name if kind_name in ("Tanh", "Sigmoid", "ReLU", "ReLU6", "Hardtanh", "Softsign") else None
    return LayerFacts(
        name=str(d["name"]),
        type=str(d.get("type", "Module")),
        kind=LayerKind.ACTIVATION if activation else kind,
        parameters=int(d.get("parameters", 0)),
        trainable=bool(d.get("trainable", False)),
        shares_parameters_with=_optional_str(d.get("shares_parameters_with")),
        fan_in=None if fan_in is None else int(fan_in),
        out_features=attrs.get("out_features") or attrs.get("out_channels"),
        conv_dims=conv_dims,
        activation=activation,
        saturating=activation in ("Tanh", "Sigmoid", "Hardtanh", "Softsign", "ReLU6"),
        rectifying=activation in ("ReLU", "ReLU6"),
        gain={"Tanh": 5 / 3, "Sigmoid": 1.0, "ReLU": math.sqrt(2.0)}.get(activation or ""),
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


def read_log(path: str | os.PathLike[str]) -> Run:
    """Read a watch log. Raises ``ConfigError`` when the file is missing or holds no recorded step."""
    from ..errors import ConfigError

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_log(text.splitlines(), source=str(path))


def parse_log(lines: Iterable[str], source: str = "") -> Run:
    from ..errors import ConfigError

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
    where = source or "the log"
    if not steps:
        raise ConfigError(f"{where}: no recorded step in it (is it a gradscope watch log?)")
    ordered = tuple(steps[k] for k in sorted(steps))
    meta = meta or {}
    try:
        layers = tuple(LayerMeta.from_dict(d) for d in meta.get("layers", []))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"{where}: the first line's layer metadata is malformed ({exc}); was it edited?") from None
    if not layers:  # no meta line survived: layers as they appear in the steps, kinds unknown
        seen: dict[str, None] = {}
        for s in ordered:
            for name in s.layers:
                seen.setdefault(name, None)
        layers = tuple(LayerMeta(LayerFacts(n, "Module", parameters=1, trainable=True), i) for i, n in enumerate(seen))
    return Run(meta, layers, ordered, skipped, source)


# -- Report ----------------------------------------------------------------------------------------------------
def build_report(
    run: Run,
    *,
    window: int = DEFAULT_WINDOW,
    config: Config | None = None,
    target: str | None = None,
    upto: int | None = None,
) -> Report:
    """The Report of the last ``window`` recorded steps (up to step ``upto``), like ``scan`` makes from batches."""
    from ..advice import suggest
    from ..config import Config
    from ..diagnose import diagnose
    from ..results import ModelInfo, ProbeInfo, Report

    config = config or Config()
    steps = [s for s in run.steps if upto is None or s.step <= upto][-window:]
    records = [meta.record(steps) for meta in sorted(run.layers, key=lambda m: (m.order < 0, m.order))]
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


def first_events(run: Run, config: Config | None = None) -> dict[str, dict[str, int]]:
    """Per layer, the first recorded step at which it was judged nonfinite / exploding / vanishing (each step
    diagnosed on its own, by the same rules as ``scan``)."""
    first: dict[str, dict[str, int]] = {}
    for step in run.steps:
        report = build_report(run, window=1, config=config, upto=step.step)
        for layer in report.layers:
            if layer.status.value in EVENTS:
                first.setdefault(layer.name, {}).setdefault(layer.status.value, step.step)
    return first


@dataclass(frozen=True)
class Timeline:
    """A watched run, ready to render: a per-layer matrix over the recorded steps, the first step each layer went
    bad, and the report of the last ``window`` steps."""

    run: Run
    stat: str
    names: tuple[str, ...]
    steps: tuple[int, ...]
    rows: tuple[tuple[float | None, ...], ...]
    first: Mapping[str, Mapping[str, int]]
    report: Report

    @classmethod
    def of(cls, run: Run, *, window: int | None = None, config: Config | None = None) -> Timeline:
        size = window or int(run.meta.get("window") or DEFAULT_WINDOW)
        report = build_report(run, window=size, config=config)
        stat, names, rows = run.matrix()
        steps = tuple(s.step for s in run.steps)
        return cls(run, stat, tuple(names), steps, tuple(tuple(r) for r in rows), first_events(run, config), report)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
