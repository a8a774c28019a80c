"""Small text helpers every layer of gradscope uses: one-line exception text, layer lists, Markdown cells.

No torch here: renderers and the CLI's ``--help`` path import it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(exc: BaseException) -> str:
    """``TypeName: first line`` (just ``TypeName`` for an empty message): an exception in one line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


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
