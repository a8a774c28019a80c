"""A watched training run as data: the JSONL log ``gradscope.watch`` writes, read back in one streaming pass into a
layers × steps heatmap, the first step at which each layer went bad, and the same ``Report`` that ``scan`` returns.

Log format (``gradscope.watch/1``), one JSON object per recorded step, one line each::

    {"step": 0, "loss": 2.3, "layers": [{"name": "0", "type": "Linear", "grad_rms": ..., "signal_rms": ...,
      "activation_rms": ..., "activation_std": ..., "saturated_fraction": ..., "dead_fraction": ...,
      "weight_rms": ...}], "meta": {...}}

``meta`` (first line only) holds what does not change over the run: schema, model class, mode, every, world size,
and per layer its type, forward order, parameter count, dtypes and the few constructor numbers the rules read
(``in_features``, ``kernel_size``, ...). Non-finite numbers are written as ``null`` and listed by name in the
layer's ``"nonfinite"`` key, so a NaN is never confused with "not measured".

A step whose gradients the optimizer did not apply (a GradScaler overflow, a non-finite loss the loop skipped) is
marked by a line of its own, ``{"skipped_step": 3, "reason": "..."}``, written right after that step's line (or
alone, when the step was not recorded). Skipped steps are counted and left out of the report, the heatmap and the
first bad steps. (A reader older than this line counts it as unreadable and skips it.)

The reader skips lines that do not parse (a run killed mid-write can leave at most its last line torn) and counts
them in ``skipped_lines``.

``build_report`` is the one place a Report is made from recorded steps, for ``Watch.report()`` in the training
process and for ``gradscope report`` from the log: the per-layer numbers are the median over the last ``window``
recorded steps (the same median-over-batches that ``scan`` uses), diagnosed and advised by ``diagnose``/``suggest``.

``TimelineBuilder`` reads steps one at a time in time and memory independent of the run's length (per step
O(layers)): it keeps the last ``window`` steps for the report, downsamples the heatmap into at most
``MAX_COLUMNS`` columns as it goes (pairs of columns merge when they run out), and judges each step's events with
a cheap test that gives the same answer as diagnosing the step in full (``_candidates``).
"""

from __future__ import annotations

import json
import math
import os
from array import array
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..display import Displayable
from ..records import LayerFacts, LayerKind, LayerRecord

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config
    from ..results import Report

SCHEMA = "gradscope.watch/1"
STATS = ("grad_rms", "signal_rms", "activation_rms", "activation_std", "saturated_fraction", "dead_fraction")
EVENTS = ("nonfinite", "exploding", "vanishing")  # the statuses whose first step the timeline reports
DEFAULT_WINDOW = 8
MAX_COLUMNS = 256  # heatmap columns kept while reading; renderers group them further to their width
SKIPPED_LISTED = 100  # skipped steps listed by number (all are counted)
MAX_LAYERS = 10_000  # layer names taken from the steps of a log without meta (more are ignored: memory stays bounded)
MAX_LINE = 64 * 2**20  # a longer line is no step of a watch log: it is skipped without being held in memory
SLACK = 1e-9  # relative margin of the cheap event test (TimelineBuilder._candidates)
SKIP_REASON = "the optimizer did not step on its gradients (a GradScaler overflow, or a step the loop skipped)"


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
    def from_dict(cls, d: Any) -> LayerMeta:
        """Raises ``ValueError``/``TypeError`` naming what is wrong with a malformed entry (the reader names the
        log)."""
        if not isinstance(d, Mapping):
            raise TypeError(f"a layer entry must be an object, got {_shown(d)}")
        if not isinstance(d.get("name"), str):
            raise TypeError(f"a layer's 'name' must be a string, got {_shown(d.get('name'))}")
        order = d.get("order", -1)
        if isinstance(order, bool) or not isinstance(order, int):
            raise TypeError(f"layer {d['name']!r}: 'order' must be an integer, got {_shown(order)}")
        facts = d.get("facts")
        shape = d.get("output_shape")
        if shape is not None and (not isinstance(shape, list) or not all(_is_int(x) for x in shape)):
            raise TypeError(f"layer {d['name']!r}: 'output_shape' must be a list of integers, got {_shown(shape)}")
        return cls(
            facts=LayerFacts.from_dict(facts) if isinstance(facts, Mapping) else _legacy_facts(d),
            order=order,
            output_shape=None if shape is None else tuple(shape),
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 40 else text[:39] + "…"


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
        """Raises ``ValueError``/``TypeError``/``KeyError`` on a line that is not a step."""
        layers: dict[str, dict[str, float]] = {}
        weights: dict[str, float] = {}
        entries = obj.get("layers", [])
        if not isinstance(entries, list):
            raise TypeError("layers is not a list")
        for entry in entries:
            name = entry["name"]
            if not isinstance(name, str):
                raise TypeError("a layer name is not a string")
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
        if loss is not None and (isinstance(loss, bool) or not isinstance(loss, (int, float))):
            loss = None
        return cls(obj["step"], layers, weights, None if loss is None else float(loss))

    @property
    def measured(self) -> bool:
        """Whether any layer has any statistic in this step."""
        return any(self.layers.values())


def skip_line(step: int, reason: str = SKIP_REASON) -> str:
    """The log line that marks ``step`` as skipped: its gradients were never applied."""
    return json.dumps({"skipped_step": step, "reason": reason}, separators=(",", ":"))


@dataclass(frozen=True)
class Skipped:
    """Steps whose gradients the optimizer did not apply: how many, and the first ``SKIPPED_LISTED`` of them."""

    count: int = 0
    steps: tuple[int, ...] = ()

    def text(self) -> str:
        """``1 step skipped (3)`` / ``12 steps skipped (0, 1, 2, …)``; empty when none."""
        if not self.count:
            return ""
        shown = ", ".join(str(s) for s in self.steps[:8]) + (", …" if self.count > 8 else "")
        return f"{self.count} step{'s' if self.count != 1 else ''} skipped ({shown})"


@dataclass(frozen=True)
class Run:
    """Recorded steps with what the log says of the model. ``steps`` holds the steps a report is made of (for a
    log read by ``gradscope report``: the last ``window``); ``skipped`` counts the steps the optimizer skipped."""

    meta: Mapping[str, Any]
    layers: tuple[LayerMeta, ...]
    steps: tuple[Step, ...]
    skipped_lines: int = 0
    source: str = ""
    skipped: Skipped = Skipped()


# -- reading -----------------------------------------------------------------------------------------------------
def check_meta(meta: Any, where: str) -> tuple[dict[str, Any], tuple[LayerMeta, ...]]:
    """The meta object of a log's first line, validated, and its layers. Raises ``ConfigError`` (one line, naming
    the log) when a value the report reads has the wrong type."""
    from ..errors import ConfigError

    def bad(key: str, want: str, value: Any) -> ConfigError:
        return ConfigError(
            f"{where}: the first line's meta is malformed: {key!r} must be {want}, got {_shown(value)} "
            "(was the log edited, or written by another tool?)"
        )

    if not isinstance(meta, Mapping):
        raise bad("meta", "an object", meta)
    for key, minimum in (("window", 1), ("every", 1), ("world_size", 1), ("parameters", 0)):
        value = meta.get(key)
        if value is not None and (not _is_int(value) or value < minimum):
            raise bad(key, f"an integer >= {minimum}", value)
    for key in ("trainable_parameters", "batch_size"):
        value = meta.get(key)
        if value is not None and (not _is_int(value) or value < 0):
            raise bad(key, "a non-negative integer or null", value)
    entries = meta.get("layers", [])
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise bad("layers", "a list", entries)
    try:
        layers = tuple(LayerMeta.from_dict(d) for d in entries)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"{where}: the first line's layer metadata is malformed ({exc}); was the log edited?"
        ) from None
    return dict(meta), layers


def _parse(line: str) -> tuple[Step | int | None, Any]:
    """(a Step, or the number of a skipped step, or None for an unreadable line; the line's meta or None)."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None, None
    if not isinstance(obj, dict):
        return None, None
    skipped = obj.get("skipped_step")
    if _is_int(skipped) and "step" not in obj:
        return skipped, None
    if not _is_int(obj.get("step")):
        return None, None
    try:
        step = Step.from_obj(obj)
    except (ValueError, KeyError, TypeError):
        return None, None
    return step, obj.get("meta")


def _lines(path: str | os.PathLike[str]) -> Iterator[str]:
    """The log's lines, one at a time (a line longer than ``MAX_LINE`` is replaced by a blank-free junk line)."""
    from ..errors import ConfigError

    try:
        f = open(path, encoding="utf-8", errors="replace")  # closed by the with below
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        while True:
            try:
                line = f.readline(MAX_LINE)
            except OSError as exc:
                raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
            if not line:
                return
            if len(line) >= MAX_LINE and not line.endswith("\n"):
                while (rest := f.readline(MAX_LINE)) and not rest.endswith("\n"):
                    pass
                yield "\x00"  # unreadable: counted, never parsed
                continue
            yield line


def read_log(path: str | os.PathLike[str]) -> Run:
    """Read a whole watch log into memory (every step; ``read_timeline`` streams). Raises ``ConfigError`` when the
    file is missing or holds no recorded step."""
    return parse_log(_lines(path), source=str(path))


def parse_log(lines: Iterable[str], source: str = "") -> Run:
    """Every step of a log (a step written twice, e.g. by a resumed run: the later one wins), skipped steps left
    out and counted."""
    from ..errors import ConfigError

    where = source or "the log"
    meta: dict[str, Any] | None = None
    layers: tuple[LayerMeta, ...] = ()
    steps: dict[int, Step] = {}
    skipped: dict[int, None] = {}
    unreadable = 0
    for line in lines:
        if not line.strip():
            continue
        parsed, line_meta = _parse(line)
        if parsed is None:
            unreadable += 1
        elif isinstance(parsed, int):
            skipped[parsed] = None
        else:
            if meta is None and line_meta is not None:
                meta, layers = check_meta(line_meta, where)
            steps[parsed.step] = parsed
    for k in skipped:
        steps.pop(k, None)
    if not steps and not skipped:
        raise ConfigError(f"{where}: no recorded step in it (is it a gradscope watch log?)")
    ordered = tuple(steps[k] for k in sorted(steps))
    if not layers:
        layers = _discovered(name for s in ordered for name in s.layers)
    listed = tuple(sorted(skipped)[:SKIPPED_LISTED])
    return Run(meta or {}, layers, ordered, unreadable, source, Skipped(len(skipped), listed))


def _discovered(names: Iterable[str]) -> tuple[LayerMeta, ...]:
    """Layers of a log without (readable) meta: as they appear in the steps, kinds unknown."""
    seen = dict.fromkeys(names)
    return tuple(LayerMeta(LayerFacts(n, "Module", parameters=1, trainable=True), i) for i, n in enumerate(seen))


def read_timeline(path: str | os.PathLike[str], *, window: int | None = None, config: Config | None = None) -> Timeline:
    """``gradscope report``: the log read in one pass, in memory independent of its length."""
    builder = TimelineBuilder(window=window, config=config, source=str(path))
    for line in _lines(path):
        builder.line(line)
    return builder.timeline()


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
    records = [meta.record(steps) for meta in ordered(run.layers)]
    diagnosis = diagnose(records, config.diagnose)
    suggestions = suggest(diagnosis, records, config)
    meta = run.meta
    loss = f"training loss, steps {steps[0].step}–{steps[-1].step}" if steps else "training loss"
    if run.skipped.count:
        loss += f"; {run.skipped.count} skipped step(s) left out"
    return Report(
        model=ModelInfo(
            target or str(meta.get("target") or meta.get("model") or "model"),
            str(meta.get("model", "Module")),
            int(meta.get("parameters") or 0),
            int(meta.get("trainable_parameters") or 0),
        ),
        probe=ProbeInfo(
            batches=len(steps),
            batch_size=meta.get("batch_size"),
            seed=0,
            loss=loss,
            device=str(meta.get("device", "cpu")),
            dtype=str(meta.get("dtype", "float32")),
        ),
        layers=diagnosis.layers,
        findings=diagnosis.findings,
        suggestions=suggestions,
        summary=diagnosis.summary,
        timing={"steps": float(len(steps))},
    )


def ordered(layers: Iterable[LayerMeta]) -> list[LayerMeta]:
    """Layers in forward order; those that never ran (order -1) last."""
    return sorted(layers, key=lambda m: (m.order < 0, m.order))


def first_events(run: Run, config: Config | None = None) -> dict[str, dict[str, int]]:
    """Per layer, the first recorded step at which it was judged nonfinite / exploding / vanishing (each step
    diagnosed on its own, by the same rules as ``scan``)."""
    builder = TimelineBuilder(config=config, meta=run.meta, layers=run.layers, heatmap=False)
    for step in run.steps:
        builder.add(step)
    builder.flush()
    return {name: dict(events) for name, events in builder.first.items()}


# -- the timeline ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One heatmap column: recorded steps ``first``…``last`` (``count`` of them), and their mean finite loss
    (NaN when every loss was non-finite, None when none was logged)."""

    first: int
    last: int
    count: int
    loss: float | None


@dataclass(frozen=True)
class Cell:
    """One layer's values in one column: the geometric mean of the positive ones (``log_sum / positive``), how
    many were zero (or negative) and how many non-finite; ``single``, the value itself while there is one (exact,
    where exp(log(v)) is not)."""

    log_sum: float = 0.0
    positive: int = 0
    zero: int = 0
    nonfinite: int = 0
    single: float = 0.0

    def __add__(self, other: Cell) -> Cell:
        return Cell(
            self.log_sum + other.log_sum,
            self.positive + other.positive,
            self.zero + other.zero,
            self.nonfinite + other.nonfinite,
            self.single + other.single,
        )

    @property
    def value(self) -> float | None:
        """None when nothing was measured, NaN when any value was non-finite, else the geometric mean of the
        positive values (0.0 when all were zero)."""
        if self.nonfinite:
            return math.nan
        if self.positive == 1:
            return self.single
        if self.positive:
            return math.exp(self.log_sum / self.positive)
        return 0.0 if self.zero else None


EMPTY = Cell()
CELL = 5  # numbers per cell in the builder's flat arrays: Cell's fields in order


@dataclass(frozen=True)
class Timeline(Displayable):
    """A watched run, ready to render: per layer, a row of heatmap cells over at most ``MAX_COLUMNS`` columns of
    recorded steps; the first step each layer went bad; the report of the last ``window`` steps (``run.steps``);
    how many steps were recorded and skipped."""

    run: Run
    stat: str
    names: tuple[str, ...]
    columns: tuple[Column, ...]
    cells: tuple[tuple[Cell, ...], ...]
    first: Mapping[str, Mapping[str, int]]
    report: Report
    recorded: int

    @property
    def steps(self) -> tuple[int, ...]:
        """The first recorded step of each column (every recorded step when the run fits in the columns)."""
        return tuple(c.first for c in self.columns)

    @property
    def rows(self) -> tuple[tuple[float | None, ...], ...]:
        return tuple(tuple(cell.value for cell in row) for row in self.cells)

    @property
    def skipped(self) -> Skipped:
        return self.run.skipped

    @classmethod
    def of(cls, run: Run, *, window: int | None = None, config: Config | None = None) -> Timeline:
        """The timeline of an in-memory run (every step of ``run.steps`` is read)."""
        builder = TimelineBuilder(window=window, config=config, source=run.source, meta=run.meta, layers=run.layers)
        for step in run.steps:
            builder.add(step)
        builder.unreadable = run.skipped_lines
        builder.skipped_count, builder.skipped_steps = run.skipped.count, list(run.skipped.steps)
        return builder.timeline()


class TimelineBuilder:
    """Reads a run one step at a time into a ``Timeline``; memory is O(window + layers × MAX_COLUMNS) whatever
    the run's length, time O(layers) per step.

    ``add(step)`` holds the newest step back until the next one arrives, because a ``skipped_step`` line follows
    the line of the step it skips; ``skip(k)`` drops the held step when it is step ``k``. ``heatmap=False`` keeps
    only the first events (``first_events``)."""

    def __init__(
        self,
        *,
        window: int | None = None,
        config: Config | None = None,
        source: str = "",
        meta: Mapping[str, Any] | None = None,
        layers: Sequence[LayerMeta] = (),
        heatmap: bool = True,
    ) -> None:
        from ..config import Config

        self.config = config or Config()
        self.source = source
        self.where = source or "the log"
        self._window_option = window
        self.meta: dict[str, Any] = dict(meta or {})
        self._layers: dict[str, LayerMeta] = {m.name: m for m in layers}
        self._from_meta = bool(self._layers)
        self._sorted: list[LayerMeta] | None = None
        self._heatmap = heatmap
        self._window: deque[Step] | None = None
        self._held: Step | None = None
        self.first: dict[str, dict[str, int]] = {}
        self.recorded = 0
        self.unreadable = 0
        self.skipped_count = 0
        self.skipped_steps: list[int] = []
        # heatmap: per statistic and layer, CELL numbers per column (Cell's fields); per column its steps and loss
        self._span = 1  # recorded steps per column; doubles when the columns run out
        self._cells: dict[str, dict[str, array[float]]] = {"grad_rms": {}, "signal_rms": {}}
        self._first_step: list[int] = []
        self._last_step: list[int] = []
        self._count: list[int] = []
        self._loss: list[list[float]] = []  # per column: [sum of finite losses, finite count, non-finite count]

    # -- input ---------------------------------------------------------------------------------------------------
    @property
    def window(self) -> int:
        return self._window_option or self.meta.get("window") or DEFAULT_WINDOW

    def line(self, line: str) -> None:
        """One line of a log."""
        if not line.strip():
            return
        parsed, meta = _parse(line)
        if parsed is None:
            self.unreadable += 1
        elif isinstance(parsed, int):
            self.skip(parsed)
        else:
            if meta is not None and not self.meta:
                self.meta, layers = check_meta(meta, self.where)
                if layers:  # the log's own description replaces layers discovered from earlier steps
                    self._layers = {m.name: m for m in layers}
                    self._from_meta, self._sorted = True, None
            self.add(parsed)

    def add(self, step: Step) -> None:
        if self._held is not None:
            self._commit(self._held)
        self._held = step

    def skip(self, k: int) -> None:
        """Step ``k`` was skipped (its gradients were not applied)."""
        if self._held is not None and self._held.step == k:
            self._held = None
        elif self._window is not None:  # a mark out of place (an edited log): at least keep it out of the report
            kept = [s for s in self._window if s.step != k]
            if len(kept) < len(self._window):
                self._window = deque(kept, maxlen=self._window.maxlen)
                self.recorded -= 1
        self.skipped_count += 1
        if len(self.skipped_steps) < SKIPPED_LISTED:
            self.skipped_steps.append(k)

    def flush(self) -> None:
        if self._held is not None:
            self._commit(self._held)
            self._held = None

    def _commit(self, step: Step) -> None:
        self.recorded += 1
        if not self._from_meta and len(self._layers) < MAX_LAYERS:
            for name in step.layers:
                if name not in self._layers and len(self._layers) < MAX_LAYERS:
                    self._layers[name] = LayerMeta(LayerFacts(name, "Module", parameters=1, trainable=True), -1)
                    self._sorted = None
        if self._window is None:
            self._window = deque(maxlen=self.window)
        if self._window and step.step <= self._window[-1].step:  # written again (a resumed run): the later wins
            kept = [s for s in self._window if s.step != step.step]
            kept.append(step)
            kept.sort(key=lambda s: s.step)
            self._window = deque(kept, maxlen=self._window.maxlen)
        else:
            self._window.append(step)
        self._judge(step)
        if self._heatmap:
            self._add_column_values(step)

    # -- first events ----------------------------------------------------------------------------------------------
    def _ordered(self) -> list[LayerMeta]:
        if self._sorted is None:
            if self._from_meta:
                self._sorted = ordered(self._layers.values())
            else:  # discovered layers: in the order they appeared
                self._sorted = list(self._layers.values())
        return self._sorted

    def _candidates(self, step: Step) -> set[tuple[str, str]]:
        """(layer, event) pairs that a full diagnosis of this one step could report: a superset, cheap to find.

        ``diagnose`` marks a layer nonfinite only when its gradient, signal or activation RMS is not finite;
        vanishing only when its gradient over the reference is below ``vanishing_warning``, and exploding when
        above ``exploding_warning`` or when its activation RMS over the first weighted layer's (containers left
        out) is. The reference is computed as ``diagnose`` computes it (the median of the last
        ``reference_layers`` usable gradients in forward order, README "How it decides"). A step with no new
        candidate is not diagnosed; one with a new candidate is diagnosed in full, so the events are exactly
        those of a full diagnosis of every step (``tests/test_watch_hostile.py`` checks that on real runs)."""
        c = self.config.diagnose
        found: set[tuple[str, str]] = set()
        grads: list[tuple[str, float]] = []
        acts: list[tuple[str, float, bool]] = []
        for m in self._ordered():
            s = step.layers.get(m.name)
            if not s:
                continue
            name = m.name
            for stat in ("grad_rms", "signal_rms", "activation_rms"):
                v = s.get(stat)
                if v is not None and not math.isfinite(v):
                    found.add((name, "nonfinite"))
            g = s.get("grad_rms")
            if g is not None and math.isfinite(g) and g > 0:
                grads.append((name, g))
            a = s.get("activation_rms")
            if m.facts.fan_in is not None and a is not None and math.isfinite(a) and a > 0:
                acts.append((name, a, m.facts.container))
        if grads:
            tail = sorted(g for _, g in grads[-c.reference_layers :])
            mid = len(tail) // 2
            reference = tail[mid] if len(tail) % 2 else math.sqrt(tail[mid - 1] * tail[mid])
            for name, g in grads:  # SLACK: diagnose divides, this multiplies; rounding must not lose a candidate
                if g < c.vanishing_warning * reference * (1 + SLACK):
                    found.add((name, "vanishing"))
                if g > c.exploding_warning * reference * (1 - SLACK):
                    found.add((name, "exploding"))
        base = next((a for _, a, container in acts if not container), None)
        if base is not None and len(acts) >= 2:
            for name, a, _ in acts:
                if a > c.exploding_warning * base * (1 - SLACK):
                    found.add((name, "exploding"))
        return found

    def _judge(self, step: Step) -> None:
        """Record the events of this step that are new: diagnose it in full only when a candidate is new."""
        if not any(event not in self.first.get(name, {}) for name, event in self._candidates(step)):
            return
        from ..diagnose import diagnose

        records = [m.record([step]) for m in self._ordered()]
        for layer in diagnose(records, self.config.diagnose).layers:
            status = layer.status.value
            if status in EVENTS:
                self.first.setdefault(layer.name, {}).setdefault(status, step.step)

    # -- heatmap ---------------------------------------------------------------------------------------------------
    def _add_column_values(self, step: Step) -> None:
        if not self._count or self._count[-1] >= self._span:
            if len(self._count) >= MAX_COLUMNS:
                self._merge_pairs()
            if not self._count or self._count[-1] >= self._span:
                self._first_step.append(step.step)
                self._last_step.append(step.step)
                self._count.append(0)
                self._loss.append([0.0, 0.0, 0.0])
        col = len(self._count) - 1
        self._count[col] += 1
        self._last_step[col] = step.step
        if step.loss is not None:
            if math.isfinite(step.loss):
                self._loss[col][0] += step.loss
                self._loss[col][1] += 1
            else:
                self._loss[col][2] += 1
        base = CELL * col
        known = self._layers
        for stat, rows in self._cells.items():
            for name, stats in step.layers.items():
                v = stats.get(stat)
                if v is None or name not in known:  # a name the meta does not list is not drawn
                    continue
                row = rows.get(name)
                if row is None:
                    row = rows[name] = array("d")
                if len(row) < base + CELL:
                    row.extend([0.0] * (base + CELL - len(row)))
                if not math.isfinite(v):
                    row[base + 3] += 1
                elif v > 0:
                    row[base] += math.log(v)
                    row[base + 1] += 1
                    row[base + 4] += v
                else:
                    row[base + 2] += 1

    def _merge_pairs(self) -> None:
        """Halve the columns: each pair of neighbours becomes one column twice as wide."""
        n = len(self._count)
        pairs = [(i, i + 1) for i in range(0, n - 1, 2)] + ([(n - 1, n - 1)] if n % 2 else [])

        first, last, count, loss = [], [], [], []
        for i, j in pairs:
            first.append(self._first_step[i])
            last.append(self._last_step[j])
            count.append(self._count[i] + (self._count[j] if i != j else 0))
            loss.append(
                list(self._loss[i]) if i == j else [a + b for a, b in zip(self._loss[i], self._loss[j], strict=True)]
            )
        self._first_step, self._last_step, self._count, self._loss = first, last, count, loss
        for rows in self._cells.values():
            for name, row in rows.items():
                new = array("d")
                for i, j in pairs:
                    for f in range(CELL):
                        a = row[CELL * i + f] if len(row) > CELL * i + f else 0.0
                        b = row[CELL * j + f] if i != j and len(row) > CELL * j + f else 0.0
                        new.append(a + b)
                rows[name] = new
        self._span *= 2

    # -- output ----------------------------------------------------------------------------------------------------
    def timeline(
        self, *, report: Report | None = None, first: Mapping[str, Mapping[str, int]] | None = None
    ) -> Timeline:
        """The timeline of what was read. ``report``/``first`` replace the built ones (for tests of renderers).
        Raises ``ConfigError`` when the log holds no recorded step, or none that measured anything."""
        from ..errors import ConfigError

        self.flush()
        skipped = Skipped(self.skipped_count, tuple(self.skipped_steps))
        if not self.recorded and not self.skipped_count:
            raise ConfigError(f"{self.where}: no recorded step in it (is it a gradscope watch log?)")
        if not self.recorded:
            raise ConfigError(
                f"{self.where}: all {skipped.count} recorded step(s) were skipped ({SKIP_REASON}); nothing to report"
            )
        window = tuple(self._window or ())
        if not any(s.measured for s in window):
            scope = "any of its" if len(window) == self.recorded else f"the last {len(window)} of its"
            raise ConfigError(
                f"{self.where}: no layer was measured in {scope} {self.recorded} recorded step(s) (no gradient "
                "existed when they were recorded: was w.step() called before loss.backward()?)"
            )
        run = Run(self.meta, tuple(self._ordered()), window, self.unreadable, self.source, skipped)
        if report is None:
            report = build_report(run, window=len(window), config=self.config)
        has_signal = any(self._measured(row) for row in self._cells["signal_rms"].values())
        stat = "signal_rms" if has_signal else "grad_rms"
        rows = self._cells[stat]
        names: list[str] = []
        cells: list[tuple[Cell, ...]] = []
        ncols = len(self._count)
        for m in self._ordered():
            row = rows.get(m.name)
            if row is None or not self._measured(row):
                continue
            names.append(m.name)
            cells.append(tuple(_cell(row, c) for c in range(ncols)))
        columns = tuple(
            Column(self._first_step[c], self._last_step[c], self._count[c], _mean_loss(self._loss[c]))
            for c in range(ncols)
        )
        events = self.first if first is None else first
        return Timeline(
            run,
            stat,
            tuple(names),
            columns,
            tuple(cells),
            {k: dict(v) for k, v in events.items()},
            report,
            self.recorded,
        )

    @staticmethod
    def _measured(row: array[float]) -> bool:
        return any(row[i + 1] or row[i + 2] or row[i + 3] for i in range(0, len(row), CELL))


def _cell(row: array[float], column: int) -> Cell:
    at = CELL * column
    if len(row) < at + CELL:
        return EMPTY
    return Cell(row[at], int(row[at + 1]), int(row[at + 2]), int(row[at + 3]), row[at + 4])


def _mean_loss(acc: Sequence[float]) -> float | None:
    total, finite, bad = acc
    if finite:
        return total / finite
    return math.nan if bad else None


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
