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

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..results import LayerStats, Report, SchemaError, Spread, json_safe
from ..util import layer_list, sci, times
from ..vocab import Status

DIFF_SCHEMA = "gradscope.diff/1"
PROBE_KEYS = ("batches", "batch_size", "seed", "loss", "device", "dtype")

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
        return f"{label} {sci(self.baseline)} → {sci(self.current)} ({ratio_text(self.ratio)})"


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
        return _ratio(median(self.baseline, "signal_rms"), median(self.current, "signal_rms"))

    @property
    def grad_ratio(self) -> float | None:
        return _ratio(median(self.baseline, "grad_rms"), median(self.current, "grad_rms"))

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"factor": self.factor}
        for metric in ("signal_rms", "grad_rms"):
            out[f"baseline_{metric}"] = median(self.baseline, metric)
            out[metric] = median(self.current, metric)
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
    except RecursionError:  # the decoder recurses per level: a report is a few levels deep
        raise ConfigError(f"{role} {p}: not a gradscope report (nested thousands of levels deep); {hint}") from None
    try:
        return Report.from_dict(data)
    except SchemaError as exc:
        raise ConfigError(f"{role} {p}: {exc}; {hint}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


# -------------------------------------------------------------------------------------------- comparing


def layer_deltas(base: Report, cur: Report, factor_for: Callable[[str], float], label: str) -> list[LayerDelta]:
    """Every layer of either report in forward order, each judged with ``factor_for(name)``. Raises
    ``ConfigError`` (naming ``label``) when no layer name matches: the two reports come from different models."""
    base_names = {la.name for la in base.layers}
    cur_names = {la.name for la in cur.layers}
    if base.layers and cur.layers and not base_names & cur_names:
        raise ConfigError(
            f"{label}: no layer name matches the current model ({_names(base.layers)} vs "
            f"{_names(cur.layers)}): it was made from another model; regenerate it with "
            f"`gradscope baseline TARGET -o FILE`"
        )
    return [_delta(b, c, factor_for((b or c).name)) for b, c in _align(base, cur)]  # type: ignore[union-attr]


def _names(layers: Sequence[LayerStats]) -> str:
    return layer_list([la.name for la in layers], quote="'")


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


def median(layer: LayerStats | None, metric: str) -> float | None:
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
        if (m := _moved(metric, median(b, metric), median(c, metric), factor)) is not None
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
        parts[0] += f", beyond the {factor_text(factor)} allowed"
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


def ratio_text(ratio: float | None) -> str:
    """``↓830×`` / ``↑1.2×`` / ``=``: how far a number moved, readable at a glance against a factor."""
    if ratio is None:
        return "—"
    if ratio == 1:
        return "="
    if ratio > 1:
        return f"↑{times(ratio)}"
    return f"↓{times(1 / ratio)}"


def factor_text(factor: float) -> str:
    return f"{factor:g}×"


def probe_notes(base: Report, cur: Report) -> tuple[str, ...]:
    diffs = [
        f"{key} {getattr(base.probe, key)} → {getattr(cur.probe, key)}"
        for key in PROBE_KEYS
        if getattr(base.probe, key) != getattr(cur.probe, key)
    ]
    if not diffs:
        return ()
    return (f"the probes differ ({', '.join(diffs)}): the numbers may move for that reason alone",)


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
        "signal_rms": median(layer, "signal_rms"),
        "grad_rms": median(layer, "grad_rms"),
        "status": layer.status.value,
    }


def _finding_ref(f: FindingRef) -> dict[str, Any]:
    return {"rule": f.rule, "layer": f.layer, "severity": f.severity, "message": f.message}
