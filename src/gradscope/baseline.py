"""Baselines: read a saved report, compare two reports layer by layer, render the comparison.

A baseline is an ordinary ``gradscope.report/1`` JSON (``gradscope baseline TARGET -o FILE`` writes one). Reading it
validates it completely and turns it back into a ``Report``, so every problem is one ``ConfigError`` line that
names the file and what to do, and the comparison below works on the same types as a fresh scan.

How two reports compare (README, "Use in CI"):

- Layers are matched by qualified name. Names only in the current report are *added*, only in the baseline
  *removed*; both are listed, neither fails the check.
- A matched layer *moved* when its signal RMS or grad RMS (medians) changed by more than the factor
  (``policy.baseline_factor``, default 10, per-layer glob overrides allowed) in either direction, or went from a
  positive finite value to zero/none/non-finite.
- A move is an **improvement** when it goes away from the baseline's own problem: up for a layer that was
  ``vanishing``/``underflow``/``zero``, down for one that was ``exploding``, anything for one that was
  ``nonfinite``. A layer whose status went from anything to ``ok`` is an improvement too. Every other move is a
  **regression** (rule ``baseline_regression``, severity ``error`` unless the policy says otherwise).
- Findings are compared as (rule, layer) checks under the same policy: one that fails now and did not fail in the
  baseline is *new*; one that failed in the baseline and no longer does is *resolved*; one that fails in both is
  *known* and does not fail the check (the baseline accepted it).
- ``timing`` is never read: a comparison depends only on the measured numbers, so a slower machine changes nothing.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import ConfigError
from .results import (
    SCHEMA,
    Finding,
    LayerStats,
    ModelInfo,
    ProbeInfo,
    Remedy,
    Report,
    Severity,
    Spread,
    Status,
    Suggestion,
    Summary,
    Where,
    json_safe,
)

DIFF_SCHEMA = "gradscope.diff/1"
SCHEMA_PREFIX = "gradscope.report/"
PROBE_KEYS = ("batches", "batch_size", "seed", "loss", "device", "dtype")
FOLD_LAYERS_OVER = 60  # markdown tables longer than this fold into <details>

# A move in this direction is the cure of this baseline status, not a regression.
_CURED_BY_GROWTH = frozenset({Status.VANISHING, Status.UNDERFLOW, Status.ZERO})
_CURED_BY_SHRINKING = frozenset({Status.EXPLODING})


class Change(StrEnum):
    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    UNCHANGED = "unchanged"
    ADDED = "added"
    REMOVED = "removed"


@dataclass(frozen=True)
class Move:
    """One metric of one layer that changed by more than the factor."""

    metric: str  # "signal_rms" or "grad_rms"
    baseline: float | None
    current: float | None
    ratio: float | None  # current / baseline; None when either side is not a finite positive number

    @property
    def up(self) -> bool:
        if self.ratio is not None:
            return self.ratio > 1
        return not _usable(self.baseline) and _usable(self.current)

    def text(self) -> str:
        label = "signal RMS" if self.metric == "signal_rms" else "grad RMS"
        return f"{label} {_num(self.baseline)} → {_num(self.current)} ({ratio_text(self.ratio)})"


@dataclass(frozen=True)
class LayerDelta:
    name: str
    type: str
    baseline: LayerStats | None  # None: added
    current: LayerStats | None  # None: removed
    change: Change
    factor: float  # the factor this layer was judged with
    moves: tuple[Move, ...] = ()
    reason: str = ""

    @property
    def signal_ratio(self) -> float | None:
        return _ratio(_median(self.baseline, "signal_rms"), _median(self.current, "signal_rms"))

    @property
    def grad_ratio(self) -> float | None:
        return _ratio(_median(self.baseline, "grad_rms"), _median(self.current, "grad_rms"))

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"factor": self.factor}
        for metric in ("signal_rms", "grad_rms"):
            out[f"baseline_{metric}"] = _median(self.baseline, metric)
            out[metric] = _median(self.current, metric)
        out["signal_ratio"] = self.signal_ratio
        out["grad_ratio"] = self.grad_ratio
        out["baseline_status"] = None if self.baseline is None else self.baseline.status.value
        out["status"] = None if self.current is None else self.current.status.value
        return out


@dataclass(frozen=True)
class FindingRef:
    rule: str
    layer: str
    severity: str
    message: str


@dataclass(frozen=True)
class Comparison:
    """Two reports side by side. ``layers`` holds every layer of either, in forward order."""

    baseline: Report
    current: Report
    baseline_label: str
    current_label: str
    factor: float
    fail_on: str
    layers: tuple[LayerDelta, ...]
    new_findings: tuple[FindingRef, ...]
    resolved_findings: tuple[FindingRef, ...]
    known_failures: frozenset[tuple[str, str]]  # (rule, layer) failing in the baseline: accepted
    notes: tuple[str, ...] = ()

    def _of(self, change: Change) -> tuple[LayerDelta, ...]:
        return tuple(d for d in self.layers if d.change is change)

    @property
    def regressions(self) -> tuple[LayerDelta, ...]:
        return self._of(Change.REGRESSION)

    @property
    def improvements(self) -> tuple[LayerDelta, ...]:
        return self._of(Change.IMPROVEMENT)

    @property
    def added(self) -> tuple[str, ...]:
        return tuple(d.name for d in self._of(Change.ADDED))

    @property
    def removed(self) -> tuple[str, ...]:
        return tuple(d.name for d in self._of(Change.REMOVED))

    @property
    def matched(self) -> int:
        return sum(1 for d in self.layers if d.baseline is not None and d.current is not None)

    @property
    def failed(self) -> bool:
        """Regressions or new failing findings (before per-layer policy on regressions; see policy.evaluate)."""
        return bool(self.regressions or self.new_findings)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = json_safe(
            {
                "schema": DIFF_SCHEMA,
                "baseline": _side(self.baseline, self.baseline_label),
                "current": _side(self.current, self.current_label),
                "factor": self.factor,
                "fail_on": self.fail_on,
                "failed": self.failed,
                "counts": {
                    "matched": self.matched,
                    "regressions": len(self.regressions),
                    "improvements": len(self.improvements),
                    "added": len(self.added),
                    "removed": len(self.removed),
                    "new_findings": len(self.new_findings),
                    "resolved_findings": len(self.resolved_findings),
                },
                "regressions": [d.name for d in self.regressions],
                "improvements": [d.name for d in self.improvements],
                "added": list(self.added),
                "removed": list(self.removed),
                "new_findings": [_finding_ref(f) for f in self.new_findings],
                "resolved_findings": [_finding_ref(f) for f in self.resolved_findings],
                "notes": list(self.notes),
                "layers": [
                    {
                        "name": d.name,
                        "type": d.type,
                        "change": d.change.value,
                        "factor": d.factor,
                        "baseline": _layer_side(d.baseline),
                        "current": _layer_side(d.current),
                        "signal_ratio": d.signal_ratio,
                        "grad_ratio": d.grad_ratio,
                        "reason": d.reason,
                    }
                    for d in self.layers
                ],
            }
        )
        return data


# ---------------------------------------------------------------------------------------------- reading


def read_baseline(path: str | Path) -> Report:
    """Read and validate a baseline report; every problem is one ``ConfigError`` naming the file."""
    return read_report(path, role="baseline")


def read_report(path: str | Path, *, role: str = "report") -> Report:
    """Read and validate a saved ``gradscope.report/1`` JSON; errors start with ``{role} {path}:``."""
    p = Path(path)
    hint = f"regenerate it with `gradscope baseline TARGET -o {p}`"
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{role} {p}: file not found; create it with `gradscope baseline TARGET -o {p}`") from None
    except IsADirectoryError:
        raise ConfigError(f"{role} {p}: is a directory, not a report file") from None
    except OSError as exc:
        raise ConfigError(f"{role} {p}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{role} {p}: not a gradscope report (not UTF-8 text); {hint}") from None
    if not text.strip():
        raise ConfigError(f"{role} {p}: the file is empty; {hint}")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            raise ConfigError(
                f"{role} {p}: truncated JSON (it ends at line {exc.lineno} before the document is complete); {hint}"
            ) from None
        raise ConfigError(
            f"{role} {p}: not a gradscope report (invalid JSON at line {exc.lineno} column {exc.colno}: "
            f"{exc.msg}); {hint}"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{role} {p}: not a gradscope report ({exc}); {hint}") from None
    return report_from_dict(data, label=f"{role} {p}", hint=hint)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def report_from_dict(data: Any, *, label: str = "report", hint: str = "") -> Report:
    """A ``Report`` from ``Report.to_dict()`` output, checking every key a comparison reads."""
    suffix = f"; {hint}" if hint else ""
    if not isinstance(data, Mapping) or "schema" not in data:
        kind = type(data).__name__ if not isinstance(data, Mapping) else "an object without a 'schema' key"
        raise ConfigError(f"{label}: not a gradscope report (the JSON is {_article(kind)}){suffix}")
    schema = data["schema"]
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        raise ConfigError(f"{label}: not a gradscope report (schema {schema!r}, expected {SCHEMA!r}){suffix}")
    if schema != SCHEMA:
        raise ConfigError(
            f"{label}: schema {schema!r} is not supported by gradscope {__version__}, which reads {SCHEMA!r}{suffix}"
        )
    try:
        return _parse_report(data)
    except _Invalid as exc:
        raise ConfigError(f"{label}: not a valid {SCHEMA} report: {exc}{suffix}") from None


def _article(kind: str) -> str:
    if kind.startswith("an "):
        return kind
    name = {
        "list": "list",
        "str": "string",
        "int": "number",
        "float": "number",
        "NoneType": "null",
        "bool": "boolean",
    }.get(kind, kind)
    return f"a {name}"


class _Invalid(Exception):
    pass


def _get(obj: Mapping[str, Any], key: str, kinds: tuple[type, ...], where: str, *, optional: bool = False) -> Any:
    if key not in obj:
        if optional:
            return None
        raise _Invalid(f"{where} has no {key!r}")
    value = obj[key]
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise _Invalid(f"{where}.{key} must be {_kinds(kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise _Invalid(f"{where}.{key} must be {_kinds(kinds)}, got {_short(value)}")
    return value


def _kinds(kinds: tuple[type, ...]) -> str:
    if kinds == _NUM:
        return "a number"
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true/false",
        list: "a list",
        dict: "an object",
        Mapping: "an object",
    }
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, Mapping) else "an object"
    return text if len(text) <= 40 else text[:37] + "..."


_NUM = (int, float)


def _number(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    value = _get(obj, key, _NUM, where, optional=True)
    return None if value is None else float(value)


def _spread(obj: Mapping[str, Any], key: str, where: str) -> Spread | None:
    median = _number(obj, key, where)
    rng = obj.get(f"{key}_range")
    lo = hi = median
    if rng is not None:
        if not (
            isinstance(rng, list)
            and len(rng) == 2
            and all(v is None or (isinstance(v, _NUM) and not isinstance(v, bool)) for v in rng)
        ):
            raise _Invalid(f"{where}.{key}_range must be [min, max]")
        lo = None if rng[0] is None else float(rng[0])
        hi = None if rng[1] is None else float(rng[1])
    if median is None and rng is None:
        return None
    nan = math.nan
    return Spread(nan if median is None else median, nan if lo is None else lo, nan if hi is None else hi)


def _parse_report(data: Mapping[str, Any]) -> Report:
    model = _get(data, "model", (Mapping,), "report")
    probe = _get(data, "probe", (Mapping,), "report")
    layers_raw = _get(data, "layers", (list,), "report")
    findings_raw = _get(data, "findings", (list,), "report")
    suggestions_raw = _get(data, "suggestions", (list,), "report", optional=True) or []
    summary = _get(data, "summary", (Mapping,), "report", optional=True) or {}
    timing = _get(data, "timing", (Mapping,), "report", optional=True) or {}
    layers = tuple(_parse_layer(item, i) for i, item in enumerate(layers_raw))
    seen: set[str] = set()
    for layer in layers:
        if layer.name in seen:
            raise _Invalid(f"layer name {layer.name!r} appears twice")
        seen.add(layer.name)
    return Report(
        model=ModelInfo(
            target=_get(model, "target", (str,), "model"),
            class_name=_get(model, "class", (str,), "model"),
            parameters=_get(model, "parameters", (int,), "model"),
            trainable_parameters=_get(model, "trainable_parameters", (int,), "model"),
        ),
        probe=ProbeInfo(
            batches=_get(probe, "batches", (int,), "probe"),
            batch_size=_get(probe, "batch_size", (int,), "probe", optional=True),
            seed=_get(probe, "seed", (int,), "probe"),
            loss=_get(probe, "loss", (str,), "probe"),
            device=_get(probe, "device", (str,), "probe"),
            dtype=_get(probe, "dtype", (str,), "probe"),
        ),
        layers=layers,
        findings=tuple(_parse_finding(item, i) for i, item in enumerate(findings_raw)),
        suggestions=tuple(s for i, item in enumerate(suggestions_raw) if (s := _parse_suggestion(item, i))),
        summary=Summary(
            reference_grad_rms=_number(summary, "reference_grad_rms", "summary"),
            worst_layer=_get(summary, "worst_layer", (str,), "summary", optional=True),
            worst_ratio=_number(summary, "worst_ratio", "summary"),
            decay_per_layer=_number(summary, "decay_per_layer", "summary"),
            forward_spread_ratio=_number(summary, "forward_spread_ratio", "summary"),
        ),
        timing={str(k): v for k, v in timing.items() if isinstance(v, _NUM) and not isinstance(v, bool)},
    )


def _parse_layer(item: Any, i: int) -> LayerStats:
    where = f"layers[{i}]"
    if not isinstance(item, Mapping):
        raise _Invalid(f"{where} must be an object, got {_short(item)}")
    name = _get(item, "name", (str,), where)
    status = _get(item, "status", (str,), where)
    try:
        parsed_status = Status(status)
    except ValueError:
        raise _Invalid(f"{where}.status {status!r} is not one of {', '.join(s.value for s in Status)}") from None
    shape = _get(item, "output_shape", (list,), where, optional=True)
    if shape is not None and not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise _Invalid(f"{where}.output_shape must be a list of integers")
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
        weight_rms=_number(item, "weight_rms", where),
        saturated_fraction=_number(item, "saturated_fraction", where),
        dead_fraction=_number(item, "dead_fraction", where),
        status=parsed_status,
        shares_parameters_with=_get(item, "shares_parameters_with", (str,), where, optional=True),
    )


def _parse_finding(item: Any, i: int) -> Finding:
    where = f"findings[{i}]"
    if not isinstance(item, Mapping):
        raise _Invalid(f"{where} must be an object, got {_short(item)}")
    severity = _get(item, "severity", (str,), where)
    try:
        parsed = Severity(severity)
    except ValueError:
        raise _Invalid(f"{where}.severity {severity!r} is not error, warning or info") from None
    layers = _get(item, "layers", (list,), where)
    if not all(isinstance(n, str) for n in layers):
        raise _Invalid(f"{where}.layers must be a list of layer names")
    return Finding(
        rule=_get(item, "rule", (str,), where),
        severity=parsed,
        layers=tuple(layers),
        message=_get(item, "message", (str,), where, optional=True) or "",
        evidence=dict(_get(item, "evidence", (Mapping,), where, optional=True) or {}),
    )


def _parse_suggestion(item: Any, i: int) -> Suggestion | None:
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


# -------------------------------------------------------------------------------------------- comparing


def compare(
    baseline: Report | Mapping[str, Any],
    current: Report | Mapping[str, Any],
    *,
    policy: Any = None,
    fail_on: str | None = None,
    factor: float | None = None,
    baseline_label: str | None = None,
    current_label: str | None = None,
) -> Comparison:
    """Compare two reports (``Report`` or ``to_dict()`` data) by layer name under ``policy`` (a PolicyConfig).

    ``factor`` overrides ``policy.baseline_factor`` (per-layer glob overrides still apply). Raises ``ConfigError``
    when no layer name matches: the two reports come from different models.
    """
    from .config import PolicyConfig
    from .policy import State, apply_policy, baseline_factor_for

    policy = policy if policy is not None else PolicyConfig()
    if factor is not None:
        from dataclasses import replace

        policy = replace(policy, baseline_factor=factor)
    base = baseline if isinstance(baseline, Report) else report_from_dict(baseline, label=baseline_label or "baseline")
    cur = current if isinstance(current, Report) else report_from_dict(current, label=current_label or "current")
    base_label = baseline_label or base.model.target
    cur_label = current_label or cur.model.target
    threshold = fail_on or policy.fail_on

    base_names = {la.name for la in base.layers}
    cur_names = {la.name for la in cur.layers}
    if base.layers and cur.layers and not base_names & cur_names:
        raise ConfigError(
            f"{base_label}: no layer name matches the current model ({_names(base.layers)} vs "
            f"{_names(cur.layers)}): it was made from another model; regenerate it with "
            f"`gradscope baseline TARGET -o FILE`"
        )

    deltas = [_delta(b, c, baseline_factor_for(policy, (b or c).name)) for b, c in _align(base, cur)]  # type: ignore[union-attr]

    base_checks = apply_policy(base, policy, fail_on=threshold)
    cur_checks = apply_policy(cur, policy, fail_on=threshold)
    base_failing = {c.key: c for c in base_checks if c.state is State.FAIL}
    cur_failing = {c.key: c for c in cur_checks if c.state is State.FAIL}
    new = tuple(_ref(c) for k, c in cur_failing.items() if k not in base_failing)
    resolved = tuple(_ref(c) for k, c in base_failing.items() if k not in cur_failing)
    return Comparison(
        baseline=base,
        current=cur,
        baseline_label=base_label,
        current_label=cur_label,
        factor=float(policy.baseline_factor),
        fail_on=threshold,
        layers=tuple(deltas),
        new_findings=new,
        resolved_findings=resolved,
        known_failures=frozenset(base_failing),
        notes=_probe_notes(base, cur),
    )


def _names(layers: Sequence[LayerStats]) -> str:
    names = [repr(la.name) for la in layers[:3]]
    more = f", … ({len(layers)} layers)" if len(layers) > 3 else ""
    return ", ".join(names) + more


def _ref(check: Any) -> FindingRef:
    severity = check.severity.value if check.severity is not None else "ignore"
    return FindingRef(check.rule, check.layer, severity, check.message)


def _align(base: Report, cur: Report) -> list[tuple[LayerStats | None, LayerStats | None]]:
    """Every layer of either report in forward order; matched by name, the others where they sit."""
    import difflib

    b_by = {la.name: la for la in base.layers}
    c_by = {la.name: la for la in cur.layers}
    b_names = [la.name for la in base.layers]
    c_names = [la.name for la in cur.layers]
    pairs: list[tuple[LayerStats | None, LayerStats | None]] = []
    done: set[str] = set()
    matcher = difflib.SequenceMatcher(a=b_names, b=c_names, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for n in b_names[i1:i2]:
                pairs.append((b_by[n], c_by[n]))
                done.add(n)
            continue
        for n in b_names[i1:i2]:
            if n not in c_by:
                pairs.append((b_by[n], None))
        for n in c_names[j1:j2]:
            if n in done:
                continue
            pairs.append((b_by.get(n), c_by[n]))
            done.add(n)
    # A layer that moved in forward order is matched where the current report runs it; nothing is lost.
    return pairs


def _usable(v: float | None) -> bool:
    return v is not None and math.isfinite(v) and v > 0


def _median(layer: LayerStats | None, metric: str) -> float | None:
    if layer is None:
        return None
    spread: Spread | None = getattr(layer, metric)
    return None if spread is None else spread.median


def _ratio(b: float | None, c: float | None) -> float | None:
    if _usable(b) and _usable(c):
        return c / b  # type: ignore[operator]
    return None


def _moved(metric: str, b: float | None, c: float | None, factor: float) -> Move | None:
    ratio = _ratio(b, c)
    if ratio is not None:
        return Move(metric, b, c, ratio) if (ratio > factor or ratio < 1 / factor) else None
    if _usable(b) != _usable(c):
        return Move(metric, b, c, None)  # a value appeared or vanished (zero, none, non-finite)
    if b is not None and c is not None and math.isnan(c) and not math.isnan(b):
        return Move(metric, b, c, None)
    return None


def _delta(b: LayerStats | None, c: LayerStats | None, factor: float) -> LayerDelta:
    if c is None:
        assert b is not None
        return LayerDelta(b.name, b.type, b, None, Change.REMOVED, factor, reason="only in the baseline")
    if b is None:
        return LayerDelta(c.name, c.type, None, c, Change.ADDED, factor, reason="new in the current model")
    moves = tuple(
        m
        for metric in ("signal_rms", "grad_rms")
        if (m := _moved(metric, _median(b, metric), _median(c, metric), factor)) is not None
    )
    type_name = c.type if c.type == b.type else f"{b.type} → {c.type}"
    status = f"status {b.status.value} → {c.status.value}"
    if b.status is not Status.OK and c.status is Status.OK:
        why = "; ".join([status, *(m.text() for m in moves)])
        return LayerDelta(c.name, type_name, b, c, Change.IMPROVEMENT, factor, moves, why)
    if not moves:
        reason = status if b.status is not c.status else ""
        return LayerDelta(c.name, type_name, b, c, Change.UNCHANGED, factor, moves, reason)
    cured = all(_cures(b.status, m) for m in moves)
    change = Change.IMPROVEMENT if cured else Change.REGRESSION
    parts = [m.text() for m in moves]
    if change is Change.REGRESSION:
        parts[0] += f", beyond the {_factor_text(factor)} allowed"
    if b.status is not c.status:
        parts.append(status)
    return LayerDelta(c.name, type_name, b, c, change, factor, moves, "; ".join(parts))


def _cures(status: Status, move: Move) -> bool:
    if status is Status.NONFINITE:
        return _usable(move.current)
    if status in _CURED_BY_GROWTH:
        return move.up
    if status in _CURED_BY_SHRINKING:
        return not move.up and _usable(move.current)
    return False


def _probe_notes(base: Report, cur: Report) -> tuple[str, ...]:
    diffs = [
        f"{key} {getattr(base.probe, key)} → {getattr(cur.probe, key)}"
        for key in PROBE_KEYS
        if getattr(base.probe, key) != getattr(cur.probe, key)
    ]
    if not diffs:
        return ()
    return (f"the probes differ ({', '.join(diffs)}): the numbers may move for that reason alone",)


# -------------------------------------------------------------------------------------------- rendering


def ratio_text(ratio: float | None) -> str:
    """``↓830×`` / ``↑1.2×`` / ``=``: how far a number moved, readable at a glance against a factor."""
    if ratio is None:
        return "—"
    if ratio == 1:
        return "="
    if ratio > 1:
        return f"↑{_times(ratio)}"
    return f"↓{_times(1 / ratio)}"


def _times(x: float) -> str:
    if x < 100:
        return f"{x:.3g}×"
    return f"{x:,.0f}×" if x < 1e5 else f"{x:.1e}×"


def _factor_text(factor: float) -> str:
    return f"{factor:g}×"


def _num(x: float | None) -> str:
    from .report import _format as fmt

    return fmt.sci(x)


def _status(layer: LayerStats | None) -> str:
    return "—" if layer is None else layer.status.value


def _status_change(d: LayerDelta) -> str:
    if d.baseline is None or d.current is None:  # added or removed: the one status there is
        return _status(d.current if d.baseline is None else d.baseline)
    b, c = _status(d.baseline), _status(d.current)
    return b if b == c else f"{b} → {c}"


_CHANGE_MARK = {
    Change.REGRESSION: "✖ regression",
    Change.IMPROVEMENT: "✔ improvement",
    Change.UNCHANGED: "",
    Change.ADDED: "+ added",
    Change.REMOVED: "− removed",
}


def headline(c: Comparison) -> str:
    """One sentence: what moved, in numbers."""
    parts = [
        f"{c.matched} matched layers",
        f"{len(c.regressions)} regression{'s' if len(c.regressions) != 1 else ''}",
        f"{len(c.improvements)} improvement{'s' if len(c.improvements) != 1 else ''}",
        f"{len(c.added)} added",
        f"{len(c.removed)} removed",
        f"{len(c.new_findings)} new failing finding{'s' if len(c.new_findings) != 1 else ''}",
        f"{len(c.resolved_findings)} resolved",
    ]
    return ", ".join(parts) + f" (factor {_factor_text(c.factor)})"


def comparison_rows(c: Comparison, *, only_changed: bool = False) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for d in c.layers:
        if only_changed and d.change is Change.UNCHANGED:
            continue
        rows.append(
            (
                d.name or "(model)",
                d.type,
                _num(_median(d.baseline, "signal_rms")),
                _num(_median(d.current, "signal_rms")),
                ratio_text(d.signal_ratio),
                _num(_median(d.baseline, "grad_rms")),
                _num(_median(d.current, "grad_rms")),
                ratio_text(d.grad_ratio),
                _status_change(d),
                _CHANGE_MARK[d.change],
            )
        )
    return rows


COMPARISON_HEADERS = (
    "Layer",
    "Type",
    "Signal RMS (baseline)",
    "Signal RMS (now)",
    "Signal ×",
    "Grad RMS (baseline)",
    "Grad RMS (now)",
    "Grad ×",
    "Status",
    "Change",
)


def render_comparison(c: Comparison, format: str = "table", *, width: int | None = None, color: bool = False) -> str:
    """The comparison as ``table`` (terminal text), ``markdown`` or ``json``."""
    if format == "json":
        return json.dumps(c.to_dict(), indent=2, allow_nan=False) + "\n"
    if format == "markdown":
        return render_comparison_markdown(c)
    if format == "table":
        from rich.console import Console

        buffer = io.StringIO()
        console = Console(
            file=buffer,
            width=width or 120,
            color_system="standard" if color else None,
            force_terminal=color,
            no_color=not color,
            highlight=False,
        )
        print_comparison(c, console)
        return buffer.getvalue()
    raise ConfigError(f"--format {format!r} must be table, markdown or json")


def print_comparison(c: Comparison, console: Any) -> None:
    """Print the comparison on a rich console (colour is the console's business)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    style = {
        Change.REGRESSION: "bold red",
        Change.IMPROVEMENT: "green",
        Change.ADDED: "cyan",
        Change.REMOVED: "magenta",
        Change.UNCHANGED: "",
    }
    head = Text()
    head.append("baseline ", style="dim")
    head.append(c.baseline_label, style="bold")
    head.append("  →  current ", style="dim")
    head.append(c.current_label, style="bold")
    console.print(head)
    console.print(Text(headline(c)))
    for note in c.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for h in COMPARISON_HEADERS:
        justify = "right" if ("RMS" in h or "×" in h) else "left"
        table.add_column(h, justify=justify, no_wrap=h != "Layer", overflow="fold")  # type: ignore[arg-type]
    for d, row in zip(c.layers, comparison_rows(c), strict=True):
        table.add_row(*(Text(cell) for cell in row), style=style[d.change])
    console.print(table)
    sections = [
        ("Regressions", [f"{d.name or '(model)'}: {d.reason}" for d in c.regressions], "bold red"),
        ("Improvements", [f"{d.name or '(model)'}: {d.reason}" for d in c.improvements], "green"),
        (
            "New failing findings",
            [f"{f.severity} {f.rule} on {f.layer}: {f.message}" for f in c.new_findings],
            "bold red",
        ),
        ("Resolved findings", [f"{f.rule} on {f.layer}" for f in c.resolved_findings], "green"),
        ("Added layers", list(c.added), "cyan"),
        ("Removed layers", list(c.removed), "magenta"),
    ]
    for title, lines, tone in sections:
        if not lines:
            continue
        console.print(Text(f"{title} ({len(lines)})", style=tone))
        for line in lines:
            console.print(Text(f"  {line}"))


def render_comparison_markdown(c: Comparison, *, level: int = 2) -> str:
    from .report.markdown import markdown_table

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    verdict = "❌ regressions" if c.failed else "✅ no regressions"
    h = "#" * level
    parts = [
        f"{h} gradscope diff — {verdict}",
        f"`{cell(c.baseline_label)}` → `{cell(c.current_label)}`: {headline(c)}.",
    ]
    parts += [f"> ⚠️ {cell(n)}" for n in c.notes]
    if c.regressions:
        parts.append(
            "**Regressions**\n\n"
            + "\n".join(f"- `{cell(d.name or '(model)')}`: {cell(d.reason)}" for d in c.regressions)
        )
    if c.new_findings:
        parts.append(
            "**New failing findings**\n\n"
            + "\n".join(
                f"- **{f.severity}** `{f.rule}` on `{cell(f.layer)}` — {cell(f.message)}" for f in c.new_findings
            )
        )
    if c.improvements:
        parts.append(
            "**Improvements**\n\n"
            + "\n".join(f"- `{cell(d.name or '(model)')}`: {cell(d.reason)}" for d in c.improvements)
        )
    if c.resolved_findings:
        parts.append(
            "**Resolved findings**: " + ", ".join(f"`{f.rule}` on `{cell(f.layer)}`" for f in c.resolved_findings)
        )
    if c.added:
        parts.append("**Added layers**: " + ", ".join(f"`{cell(n)}`" for n in c.added))
    if c.removed:
        parts.append("**Removed layers**: " + ", ".join(f"`{cell(n)}`" for n in c.removed))
    rows = [[cell(x) for x in row] for row in comparison_rows(c)]
    table = markdown_table(rows, COMPARISON_HEADERS)
    if len(rows) > FOLD_LAYERS_OVER:
        table = f"<details><summary>Layers ({len(rows)})</summary>\n\n{table}\n\n</details>"
    parts.append(table)
    return "\n\n".join(parts) + "\n"


def _side(report: Report, label: str) -> dict[str, Any]:
    return {
        "label": label,
        "target": report.model.target,
        "class": report.model.class_name,
        "healthy": report.healthy,
        "probe": {k: getattr(report.probe, k) for k in PROBE_KEYS},
    }


def _layer_side(layer: LayerStats | None) -> dict[str, Any] | None:
    if layer is None:
        return None
    return {
        "type": layer.type,
        "signal_rms": _median(layer, "signal_rms"),
        "grad_rms": _median(layer, "grad_rms"),
        "status": layer.status.value,
    }


def _finding_ref(f: FindingRef) -> dict[str, Any]:
    return {"rule": f.rule, "layer": f.layer, "severity": f.severity, "message": f.message}
