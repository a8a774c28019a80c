"""A comparison of two reports (``gradscope diff``, ``check --baseline``): terminal table, Markdown, JSON."""

from __future__ import annotations

import json
from typing import Any

from ..ci.baseline import Change, Comparison, LayerDelta, factor_text, median, ratio_text
from ..errors import ConfigError
from ..results import LayerStats
from ..util import displayed, md_cell, sci

FOLD_LAYERS_OVER = 60  # markdown tables longer than this fold into <details>


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
    return ", ".join(parts) + f" (factor {factor_text(c.factor)})"


def comparison_rows(c: Comparison, *, only_changed: bool = False) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for d in c.layers:
        if only_changed and d.change is Change.UNCHANGED:
            continue
        rows.append(
            (
                d.name or "(model)",
                d.type,
                sci(median(d.baseline, "signal_rms")),
                sci(median(d.current, "signal_rms")),
                ratio_text(d.signal_ratio),
                sci(median(d.baseline, "grad_rms")),
                sci(median(d.current, "grad_rms")),
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
    c = displayed(c)  # names and labels come from the user's files; JSON (above) keeps them exact
    if format == "markdown":
        return render_comparison_markdown(c)
    if format == "table":
        from .terminal import render_text

        return render_text(lambda console: print_comparison(c, console), width, color=color)
    raise ConfigError(f"--format {format!r} must be table, markdown or json")


def print_comparison(c: Comparison, console: Any) -> None:
    """Print the comparison on a rich console (colour is the console's business).

    The table fits the console: one row per layer where it can (layer, type, baseline, now and × for the signal
    and the grad RMS, status, change); otherwise each layer takes two lines, the signal RMS above the grad RMS,
    the change under the status, and the type goes when the names need the room. Names wrap, never get cut."""
    from rich.text import Text

    c = displayed(c)

    head = Text()
    head.append("baseline ", style="dim")
    head.append(c.baseline_label, style="bold")
    head.append("  →  current ", style="dim")
    head.append(c.current_label, style="bold")
    console.print(head)
    console.print(Text(headline(c)))
    for note in c.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    rows = comparison_rows(c)
    table = _wide_table(c, rows, console.width) or _folded_table(c, rows, console.width)
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
        console.print(_indented(lines))


_STYLE = {
    Change.REGRESSION: "bold red",
    Change.IMPROVEMENT: "green",
    Change.ADDED: "cyan",
    Change.REMOVED: "magenta",
    Change.UNCHANGED: "",
}
MIN_NAME = 12  # a layer name wraps after a dot down to this width


def _table() -> Any:
    from rich import box
    from rich.table import Table

    return Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True, header_style="bold"
    )


def _width(cells: list[str], header: str) -> int:
    return max([*(len(part) for part in header.split("\n")), *(len(cell) for cell in cells)])


def _name(name: str, width: int) -> Any:
    from rich.text import Text

    from .fmt import wrap_name

    return Text("\n".join(wrap_name(name, width)))


def _wide_table(c: Comparison, rows: list[tuple[str, ...]], console_width: int) -> Any | None:
    """One line per layer, or None when that does not fit with names at least MIN_NAME wide."""
    from rich.text import Text

    headers = (
        "\nType",
        "Signal RMS\nbaseline",
        "\nnow",
        "\n×",
        "Grad RMS\nbaseline",
        "\nnow",
        "\n×",
        "\nStatus",
        "\nChange",
    )
    widths = [_width([r[i + 1] for r in rows], h) for i, h in enumerate(headers)]
    names = [r[0] for r in rows]
    room = console_width - sum(widths) - 2 * len(headers)
    if room < min(MIN_NAME, max(len(n) for n in [*names, "Layer"])):
        return None
    name_width = min(room, max(len(n) for n in [*names, "Layer"]))
    table = _table()
    table.add_column("\nLayer", width=name_width, overflow="fold")
    for h, w in zip(headers, widths, strict=True):
        right = "RMS" in h or "×" in h or "now" in h
        table.add_column(h, justify="right" if right else "left", no_wrap=True, width=w)
    for d, row in zip(c.layers, rows, strict=True):
        table.add_row(_name(row[0], name_width), *(Text(cell) for cell in row[1:]), style=_STYLE[d.change])
    return table


def _folded_table(c: Comparison, rows: list[tuple[str, ...]], console_width: int) -> Any:
    """Two lines per layer: the signal RMS, then the grad RMS; the status, then the change."""
    from rich.text import Text

    headers = ("RMS", "baseline", "now", "×", "Status / change")
    cells = [
        ("signal\ngrad", f"{r[2]}\n{r[5]}", f"{r[3]}\n{r[6]}", f"{r[4]}\n{r[7]}", f"{r[8]}\n{r[9]}".rstrip())
        for r in rows
    ]
    widths = [
        max([len(h), *(len(line) for cell in cells for line in cell[i].split("\n"))]) for i, h in enumerate(headers)
    ]
    type_width = _width([r[1] for r in rows], "Type")
    longest = max(len(r[0]) for r in [*rows, ("Layer",)])
    room = console_width - sum(widths) - 2 * len(headers)
    # The type goes when keeping it would wrap a name that fits without it.
    keep_type = room - type_width - 2 >= min(longest, MIN_NAME) and (room - type_width - 2 >= longest or room < longest)
    if keep_type:
        room -= type_width + 2
    name_width = max(min(room, longest), min(MIN_NAME, longest))
    table = _table()
    table.add_column("Layer", width=name_width, overflow="fold")
    if keep_type:
        table.add_column("Type", no_wrap=True, width=type_width)
    for h, w in zip(headers, widths, strict=True):
        table.add_column(h, justify="right" if h in ("baseline", "now", "×") else "left", no_wrap=True, width=w)
    for d, row, folded in zip(c.layers, rows, cells, strict=True):
        first = [_name(row[0], name_width), *([Text(row[1])] if keep_type else [])]
        table.add_row(*first, *(Text(cell) for cell in folded), style=_STYLE[d.change])
    return table


def _indented(lines: list[str]) -> Any:
    """Lines two columns in; a wrapped line stays under its own text."""
    from rich.padding import Padding
    from rich.text import Text

    return Padding(Text("\n".join(lines)), (0, 0, 0, 2))


def render_comparison_markdown(c: Comparison, *, level: int = 2) -> str:
    from .markdown import markdown_table

    c = displayed(c)

    verdict = "❌ regressions" if c.failed else "✅ no regressions"
    h = "#" * level
    parts = [
        f"{h} gradscope diff — {verdict}",
        f"`{md_cell(c.baseline_label)}` → `{md_cell(c.current_label)}`: {headline(c)}.",
    ]
    parts += [f"> ⚠️ {md_cell(n)}" for n in c.notes]
    if c.regressions:
        parts.append(
            "**Regressions**\n\n"
            + "\n".join(f"- `{md_cell(d.name or '(model)')}`: {md_cell(d.reason)}" for d in c.regressions)
        )
    if c.new_findings:
        parts.append(
            "**New failing findings**\n\n"
            + "\n".join(
                f"- **{f.severity}** `{f.rule}` on `{md_cell(f.layer)}` — {md_cell(f.message)}" for f in c.new_findings
            )
        )
    if c.improvements:
        parts.append(
            "**Improvements**\n\n"
            + "\n".join(f"- `{md_cell(d.name or '(model)')}`: {md_cell(d.reason)}" for d in c.improvements)
        )
    if c.resolved_findings:
        parts.append(
            "**Resolved findings**: " + ", ".join(f"`{f.rule}` on `{md_cell(f.layer)}`" for f in c.resolved_findings)
        )
    if c.added:
        parts.append("**Added layers**: " + ", ".join(f"`{md_cell(n)}`" for n in c.added))
    if c.removed:
        parts.append("**Removed layers**: " + ", ".join(f"`{md_cell(n)}`" for n in c.removed))
    rows = [[md_cell(x) for x in row] for row in comparison_rows(c)]
    table = markdown_table(rows, COMPARISON_HEADERS)
    if len(rows) > FOLD_LAYERS_OVER:
        table = f"<details><summary>Layers ({len(rows)})</summary>\n\n{table}\n\n</details>"
    parts.append(table)
    return "\n\n".join(parts) + "\n"
