"""Formatting shared by every renderer: numbers, layer lists, the layer tree, log bars, the verdict, and text
folded to a width (layer names, code).

One place, so the terminal and markdown reports never disagree on how a number or a verdict is written.
Pure string work on ``Report`` data: no torch, no rich, no diagnosis.

Numbers, one convention each (the two functions live in ``util`` so that the diagnosis' messages, which cannot
import a renderer, write them the same way):
- an RMS or any other magnitude: ``sci`` → ``2.3e-05`` (always; ``0``, ``nan``, ``inf`` as such);
- a ratio, "N× something": ``times`` → ``0.42×``, ``120×``, ``10,000×``, and ``7.4e-04×`` outside 0.01–1e5.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..results import LayerStats, ProbeInput, Report, Spread, Suggestion
from ..util import DASH as DASH  # re-exported: renderers write fmt.DASH, fmt.sci, fmt.layer_list
from ..util import ELLIPSIS, abbreviated
from ..util import layer_list as layer_list
from ..util import sci as sci
from ..util import times as times
from ..vocab import Severity, Status, Where

MINUS = "\u2212"  # typographic minus: "−0.58" lines up with "+0.58" and reads as a sign, not a hyphen

# Eighth blocks give the bars sub-cell resolution, so neighbouring layers' small differences stay visible.
_PARTIAL_BLOCKS = ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")
_FULL_BLOCK = "█"
MIN_DECADES = 2.0  # smallest span of a bar scale, in orders of magnitude


# ------------------------------------------------------------------------------------------ numbers


def num(x: Any) -> str:
    """An evidence/param value: ints as is, mid-range floats to 3 significant digits, the rest ``sci``."""
    if x is None:
        return DASH
    if isinstance(x, bool):  # before int: bool is an int subclass
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x) or x == 0:
            return sci(x)
        if not 1e-3 <= abs(x) < 1e5:
            return sci(x)
        return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"  # 1000, not 1e+03
    if isinstance(x, Mapping):
        return "{" + ", ".join(f"{k}={num(v)}" for k, v in x.items()) + "}"
    if isinstance(x, (list, tuple)):
        shown, _ = abbreviated([num(v) for v in x])
        return "[" + ", ".join(ELLIPSIS if v is None else v for v in shown) + "]"
    return str(x)


def signed(x: float, digits: int = 2) -> str:
    """``+0.58`` / ``−0.58`` with a real minus sign; a value that rounds to zero has no sign."""
    text = f"{x:+.{digits}f}"
    if float(text) == 0:
        return text[1:]
    return text.replace("-", MINUS)


def count(n: int) -> str:
    return f"{n:,}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith(('s', 'sh', 'ch', 'x')) else 's'}"


def shape(s: tuple[int, ...] | None) -> str:
    return DASH if s is None else "[" + ", ".join(str(d) for d in s) + "]"


def median(s: Spread | None) -> float | None:
    return None if s is None else s.median


def log10_ratio(after: float | None, before: float | None) -> float | None:
    """Change in orders of magnitude, or None where either side has no finite positive value."""
    if after is None or before is None:
        return None
    if not (math.isfinite(after) and math.isfinite(before)) or after <= 0 or before <= 0:
        return None
    return math.log10(after / before)


# -------------------------------------------------------------------------------------------- lists


def mapping(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={num(v)}" for k, v in values.items())


def suggestion_target(s: Suggestion, quote: str = "") -> str:
    """Where a remedy goes, as a phrase: ``after a, b, c`` or ``whole model``."""
    if s.where is Where.MODEL or not s.layers:
        return "whole model" if not s.layers else f"model-wide ({layer_list(s.layers, quote)})"
    verb = {Where.AFTER: "after", Where.BEFORE: "before", Where.REPLACE: "replace"}[s.where]
    return f"{verb} {layer_list(s.layers, quote)}"


# ------------------------------------------------------------------------------------------ verdict


@dataclass(frozen=True)
class Verdict:
    text: str
    severity: Severity | None  # the worst finding, for colour; None when there are none


def verdict(report: Report) -> Verdict:
    """HEALTHY, optionally with its warnings; otherwise the error/warning counts."""
    counts = {sev: sum(1 for f in report.findings if f.severity is sev) for sev in Severity}
    extras = [plural(counts[Severity.WARNING], "warning")] if counts[Severity.WARNING] else []
    if counts[Severity.INFO]:
        extras.append(f"{counts[Severity.INFO]} info")
    if report.healthy:
        return Verdict(" · ".join(["HEALTHY", *extras]), report.worst_severity())
    return Verdict(", ".join([plural(counts[Severity.ERROR], "error"), *extras]), Severity.ERROR)


def decay_text(decay_per_layer: float | None) -> str:
    # The stored value runs input → output; read from the loss back, decay is its negation (vanishing: < 0).
    if decay_per_layer is None or not math.isfinite(decay_per_layer):
        return sci(decay_per_layer)
    return f"{signed(-decay_per_layer)} orders of magnitude per layer (output → input)"


def decay_change_text(before: float | None, after: float | None) -> str:
    """``−0.58 → −0.07 orders of magnitude per layer (output → input)``, for the fix."""
    if before is None or after is None or not (math.isfinite(before) and math.isfinite(after)):
        return f"{decay_text(before)} → {decay_text(after)}"
    return f"{signed(-before)} → {decay_text(after)}"


def worst_text(report: Report) -> str:
    s = report.summary
    if s.worst_layer is None:
        return DASH
    parts = [s.worst_layer or "(model)"]  # the root module itself can be the layer
    layer = next((la for la in report.layers if la.name == s.worst_layer), None)
    if layer is not None and layer.grad_rms is not None:
        parts.append(f"grad RMS {sci(layer.grad_rms.median)}")
    if s.worst_ratio is not None:
        orders = log10_ratio(s.worst_ratio, 1.0)
        if orders is None:  # nan/inf/0: no "× reference" arithmetic to show
            parts.append(f"ratio to reference {sci(s.worst_ratio)}")
        else:
            parts.append(f"{times(s.worst_ratio)} reference {sci(s.reference_grad_rms)} ({signed(orders, 1)} orders)")
    return ", ".join(parts)


def spread_text(ratio: float | None) -> str:
    if ratio is None:
        return DASH
    return f"{sci(ratio)} (activation std, deepest layers / first layer)"


def probe_text(report: Report, *, assumed: bool = True) -> str:
    """``4 batches × 16 (inputs int64 [35, 16]), seed 0, …; judged for adam; assumed: …``: the batch size is the
    dimension that indexes samples; the inputs are every tensor forward() got, and what synthetic ones assumed."""
    p = report.probe
    size = plural(p.batches, "batch") if p.batch_size is None else f"{plural(p.batches, 'batch')} × {p.batch_size}"
    if p.inputs:
        shown, _ = abbreviated([f"{i.name}={input_text(i)}" if i.name else input_text(i) for i in p.inputs])
        size += f" (inputs {', '.join(ELLIPSIS if text is None else text for text in shown)})"
    text = f"{size}, seed {p.seed}, loss {p.loss}, {p.device}, {p.dtype}; judged for {p.optimizer}"
    return text + (f"; assumed: {assumed_text(report)}" if assumed and p.assumed else "")


def assumed_text(report: Report) -> str:
    """What the synthetic inputs took for granted (``hidden = None``; ``a 1×1 latent for …``); empty when nothing."""
    return "; ".join(report.probe.assumed)


def input_text(i: ProbeInput) -> str:
    """``int64 [35, 16]``."""
    return f"{i.dtype} {shape(i.shape)}"


_SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 48) -> str:
    """Values on a log scale as one row of eighth-blocks, at most ``width`` wide (neighbours averaged in log
    space); a position with no finite positive value is a space."""
    if not values:
        return ""
    groups = [list(values[i * len(values) // width : (i + 1) * len(values) // width]) for i in range(width)]
    groups = [g for g in groups if g] if len(values) > width else [[v] for v in values]
    logs = []
    for group in groups:
        usable = [math.log10(v) for v in group if math.isfinite(v) and v > 0]
        logs.append(sum(usable) / len(usable) if len(usable) == len(group) else None)
    known = [v for v in logs if v is not None]
    if not known:
        return " " * len(logs)
    lo, hi = min(known), max(known)
    span = hi - lo
    return "".join(
        " " if v is None else _SPARK[min(int((v - lo) / span * len(_SPARK)), len(_SPARK) - 1) if span else -1]
        for v in logs
    )


def positions_text(report: Report) -> str:
    """``▁▁▂▃▅█ 32 positions at 'emb'; the start gets 1.2e-10× the gradient of the end``."""
    p = report.positions
    if p is None:
        return DASH
    ratio = "—" if p.ratio is None else f"{times(p.ratio)} the gradient of the other end"
    return (
        f"{sparkline(p.grad_rms)}  {len(p.grad_rms)} positions at '{p.layer}'; the {p.weak_end or 'start'} gets {ratio}"
    )


def params_text(report: Report) -> str:
    m = report.model
    return f"{count(m.parameters)} parameters ({count(m.trainable_parameters)} trainable)"


# --------------------------------------------------------------------------------------- layer tree


@dataclass(frozen=True)
class TreeRow:
    level: int  # indentation level, from the dotted name
    label: str  # the last part of the name (the tree shows the rest)
    name: str  # the full qualified name
    layer: LayerStats | None  # None for a container row derived from the names


def tree_rows(layers: Iterable[LayerStats]) -> list[TreeRow]:
    """Layers in forward order, with a container row whenever a new parent opens.

    Parents come from the dotted names, not from ``depth``, so container rows and layer rows always agree.
    A parent is re-opened when forward order leaves it and comes back: the jump shows instead of hiding.
    """
    rows: list[TreeRow] = []
    open_path: list[str] = []
    for layer in layers:
        parts = layer.name.split(".") if layer.name else []
        common = 0
        while common < min(len(open_path), len(parts) - 1) and open_path[common] == parts[common]:
            common += 1
        for level in range(common, len(parts) - 1):
            rows.append(TreeRow(level, parts[level], ".".join(parts[: level + 1]), None))
        label = parts[-1] if parts else "(model)"  # the root module itself can be a layer
        rows.append(TreeRow(max(len(parts) - 1, 0), label, layer.name, layer))
        open_path = parts
    return rows


# --------------------------------------------------------------------------------------------- bars


def bar_value(layer: LayerStats) -> float | None:
    """A bar shows the own parameters' grad RMS, or the output gradient's RMS for parameter-free layers."""
    return median(layer.grad_rms) if layer.is_parametric else median(layer.signal_rms)


@dataclass(frozen=True)
class LogScale:
    """log10 range of one kind of value over the report's own layers: bars show decay, not absolute size."""

    lo: float
    hi: float
    smallest: float  # log10 of the smallest value: lo sits lower when the values span under MIN_DECADES

    @classmethod
    def over(cls, values: Iterable[float | None]) -> LogScale | None:
        logs = [math.log10(v) for v in values if v is not None and math.isfinite(v) and v > 0]
        if not logs:
            return None
        # A healthy model's few-percent spread must not stretch into a full-width "decay": the scale spans at
        # least MIN_DECADES, anchored at the top so the largest value always fills the bar.
        hi = max(logs)
        return cls(min(min(logs), hi - MIN_DECADES), hi, min(logs))

    def bar(self, value: float | None, width: int) -> str:
        if value is None or not math.isfinite(value) or value <= 0:
            return ""  # the number column says nan/inf/0; a bar would pretend to a magnitude
        span = self.hi - self.lo
        frac = 1.0 if span <= 0 else min(max((math.log10(value) - self.lo) / span, 0.0), 1.0)
        # The smallest value still gets one cell: an empty bar must mean "no value", not "smallest".
        eighths = round((1 + frac * (width - 1)) * 8)
        return _FULL_BLOCK * (eighths // 8) + _PARTIAL_BLOCKS[eighths % 8]

    def label(self) -> str:
        """The smallest and the largest value drawn (not the scale's floor, which can sit below the smallest)."""
        low, high = sci(10**self.smallest), sci(10**self.hi)
        return high if low == high else f"{low} … {high}"


def grad_scale(report: Report) -> LogScale | None:
    return LogScale.over(median(la.grad_rms) for la in report.layers if la.is_parametric)


def signal_scale(report: Report) -> LogScale | None:
    return LogScale.over(median(la.signal_rms) for la in report.layers if not la.is_parametric)


# ---------------------------------------------------------------------------------------------- fix


@dataclass(frozen=True)
class FixRow:
    name: str
    before: LayerStats | None  # None: inserted by the fix
    after: LayerStats | None  # None: removed or replaced by the fix

    @property
    def change(self) -> float | None:
        b = None if self.before is None else median(self.before.grad_rms)
        a = None if self.after is None else median(self.after.grad_rms)
        return log10_ratio(a, b)


def fix_rows(before: Report, after: Report) -> list[FixRow]:
    """Pair layers by name; inserted and removed ones stay at their place in forward order."""
    b_by = {la.name: la for la in before.layers}
    a_by = {la.name: la for la in after.layers}
    b_names = [la.name for la in before.layers]
    a_names = [la.name for la in after.layers]
    rows: list[FixRow] = []
    matcher = difflib.SequenceMatcher(a=b_names, b=a_names, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows.extend(FixRow(n, b_by[n], a_by[n]) for n in b_names[i1:i2])
            continue
        rows.extend(FixRow(n, b_by[n], a_by.get(n)) for n in b_names[i1:i2] if n not in a_by)
        rows.extend(FixRow(n, b_by.get(n), a_by[n]) for n in a_names[j1:j2])
    return rows


def status_of(layer: LayerStats | None) -> Status | None:
    return None if layer is None else layer.status


# ------------------------------------------------------------------------------------------ folding

_NAME_BREAKS = "._-/"  # a qualified name breaks after these, so each piece stays a recognisable part


def wrap_name(name: str, width: int) -> list[str]:
    """``name`` in lines of at most ``width`` cells, broken after a dot (or ``_``, ``-``, ``/``) where it can be,
    mid-part only where a part alone is wider than ``width``. Nothing is dropped: the lines joined are ``name``."""
    width = max(width, 1)
    lines: list[str] = []
    rest = name
    while len(rest) > width:
        # "blocks.0.pnorm (new)": a space is a break too, so the suffix goes to its own line
        cut = max((i + 1 for i, ch in enumerate(rest[: width + 1]) if ch == " " and i), default=0)
        cut = max([cut, *(i + 1 for i, ch in enumerate(rest[:width]) if ch in _NAME_BREAKS)]) or width
        lines.append(rest[:cut].rstrip(" "))
        rest = rest[cut:]
    return [*lines, rest]


def code_lines(code: str, width: int) -> list[str]:
    """Code shown at ``width`` so that every line can still be pasted: a comment that does not fit goes on its own
    lines above its code, each starting with ``#``; code breaks only after a comma inside brackets (implicit
    line joining), continued 4 columns deeper. A code line with no such break stays whole, however long."""
    out: list[str] = []
    for line in code.splitlines():
        if len(line) <= width:
            out.append(line)
            continue
        body, comment = _split_comment(line)
        indent = line[: len(line) - len(line.lstrip())]
        if comment:
            out += _comment_lines(comment, indent, width)
        if body.strip():
            out += _code_break(body.rstrip(), indent, width)
    return out


def _split_comment(line: str) -> tuple[str, str]:
    """The code and the comment text (after ``#``) of one line; a ``#`` inside a string is code."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote and line[i - 1] != "\\":
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i], line[i + 1 :].strip()
    return line, ""


def _comment_lines(text: str, indent: str, width: int) -> list[str]:
    import textwrap

    room = max(width - len(indent) - 2, 20)
    pieces = textwrap.wrap(text, room, break_on_hyphens=False, break_long_words=False)
    # A comment can break anywhere; a long identifier in it breaks where a name would.
    pieces = [part for piece in pieces for part in wrap_name(piece, room)]
    return [f"{indent}# {piece}" for piece in pieces] or [f"{indent}#"]


def _code_break(body: str, indent: str, width: int) -> list[str]:
    lines: list[str] = []
    rest, prefix = body, ""
    while len(prefix) + len(rest) > width:
        cut = _last_break(rest, width - len(prefix))
        if cut is None:
            break
        lines.append(prefix + rest[:cut].rstrip())
        rest, prefix = rest[cut:].lstrip(), indent + "    "
    return [*lines, prefix + rest]


def _last_break(text: str, room: int) -> int | None:
    """Where to break within ``room``: just after the last ``,``, opening bracket or space that sits inside
    brackets and outside strings (a token boundary, where Python joins lines implicitly); a comma preferred."""
    depth, quote, comma, other = 0, "", None, None
    for i, ch in enumerate(text[:room]):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
            other = i + 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth > 0:
            comma = i + 1
        elif ch == " " and depth > 0:
            other = i + 1
    return comma if comma is not None and comma > room // 2 else other or comma
