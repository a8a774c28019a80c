"""Small text helpers every layer of gradscope uses: one-line exception text, layer lists, Markdown cells, and
the neutralising of strings that come from the user's model before they are printed (``clean``, ``displayed``).

No torch here: renderers and the CLI's ``--help`` path import it.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

ELLIPSIS = "…"
DASH = "—"  # a value that does not apply (None)


def sci(x: float | None) -> str:
    """Compact scientific form for RMS-like magnitudes: ``3.2e-07``; ``—`` for None; ``nan``/``inf``."""
    if x is None:
        return DASH
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    return f"{x:.1e}"


def times(x: float | None) -> str:
    """A ratio (a dimensionless multiplier): ``0.42×``, ``3.1×``, ``10,000×``, and ``7.4e-04×`` outside 0.01–1e5,
    where the mantissa matches ``sci``. The one format for every "N× something" gradscope prints."""
    if x is None:
        return DASH
    if not math.isfinite(x) or x == 0:
        return f"{sci(x)}×"
    size = abs(x)
    if size < 0.01 or size >= 1e5:
        return f"{x:.1e}×"
    if size < 100:
        return f"{x:.3g}×"
    return f"{x:,.0f}×"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(exc: BaseException) -> str:
    """``TypeName: first line`` (just ``TypeName`` for an empty message): an exception in one line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space: a multi-line message
    (``load_state_dict``'s, whose reason is on its second line) kept whole, on one line."""
    return " ".join(text.split())


def abbreviated(items: Sequence[str], head: int = 3, tail: int = 2) -> tuple[list[str | None], int]:
    """First ``head`` … last ``tail``, ``None`` marking the gap; also returns how many were hidden."""
    if len(items) <= head + tail + 1:  # hiding a single item saves nothing
        return list(items), 0
    return [*items[:head], None, *items[-tail:]], len(items) - head - tail


def layer_list(names: Sequence[str], quote: str = "") -> str:
    """``a, b, c, …, y, z (12 layers)``: the one way a list of layer names is shortened, in messages and reports.
    The root module's empty name reads ``(model)``."""
    shown, hidden = abbreviated([n or "(model)" for n in names])
    text = ", ".join(ELLIPSIS if n is None else f"{quote}{n}{quote}" for n in shown)
    return f"{text} ({len(names)} layers)" if hidden else text


def md_cell(text: str) -> str:
    """Text safe inside a Markdown table cell: a pipe would end the cell, a newline the table."""
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


# -- text from the user's model, printed ------------------------------------------------------------------------

# Control characters (C0, DEL, C1), line and paragraph separators, and bidirectional overrides ("Trojan Source"):
# shown as Python-style escapes, so a name prints on one line, moves no cursor and reorders nothing.
_SHOWN_ESCAPES = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_UNPRINTABLE = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, 0x061C, 0x200E, 0x200F,
                *range(0x202A, 0x202F), *range(0x2066, 0x206A)]  # fmt: skip
_ESCAPES = {c: _SHOWN_ESCAPES.get(c, f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNPRINTABLE}
# A GitHub runner reads a stdout line that starts (after blanks) with "::" or "##[" as a workflow command. A
# zero-width space inside each pair keeps the text as it looks and makes no line of it a command, wherever a
# renderer wraps or folds it.
_COMMAND = re.compile(r"(?<=:)(?=:)|(?<=#)(?=#\[)")
_ZERO_WIDTH_SPACE = "\u200b"


def clean(text: str) -> str:
    """``text`` safe to print on a terminal and on a CI runner's stdout: control characters (ESC, newlines, C1,
    bidi overrides) shown as escapes (``\\x1b``, ``\\n``), and ``::`` / ``##[`` broken by a zero-width space so
    no line can become a workflow command. Idempotent; text without such characters is returned as is."""
    if text.isprintable() and "::" not in text and "##[" not in text:
        return text
    return _COMMAND.sub(_ZERO_WIDTH_SPACE, text.translate(_ESCAPES))


def displayed(value: T) -> T:
    """A copy of ``value`` (a report, a check result, a comparison: dataclasses, tuples, lists, dicts) with every
    string passed through ``clean``: what the terminal, Markdown, HTML and check renderers show. Layer names,
    messages, targets and evidence come from the user's model; this is the one place they are neutralised.
    Enum members (gradscope's own words) and numbers are kept; objects shared within ``value`` stay shared."""
    memo: dict[int, Any] = {}
    return _displayed(value, memo)  # type: ignore[no-any-return]


def _lines(text: str) -> str:
    """A text of several lines (a field marked ``metadata={"lines": True}``: code to paste) cleaned line by line,
    its line breaks kept."""
    cleaned = "\n".join(clean(line) for line in text.split("\n"))
    return text if cleaned == text else cleaned


def _displayed(value: Any, memo: dict[int, Any]) -> Any:
    if isinstance(value, enum.Enum) or value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return clean(value)
    key = id(value)
    if key in memo:
        return memo[key]
    result: Any = value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: _lines(getattr(value, f.name))
            if f.metadata.get("lines")
            else _displayed(getattr(value, f.name), memo)
            for f in dataclasses.fields(value)
            if f.init
        }
        if any(changes[name] is not getattr(value, name) for name in changes):
            result = dataclasses.replace(value, **changes)
    elif isinstance(value, Mapping):
        items = {_displayed(k, memo): _displayed(v, memo) for k, v in value.items()}
        if len(items) != len(value) or any(
            k is not k0 or v is not value[k0] for (k, v), k0 in zip(items.items(), value, strict=False)
        ):
            result = items
    elif isinstance(value, (list, tuple, set, frozenset)):
        items_ = [_displayed(v, memo) for v in value]
        if any(a is not b for a, b in zip(items_, value, strict=True)):
            if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
                result = type(value)(*items_)
            else:
                result = type(value)(items_)
    memo[key] = result
    return result
