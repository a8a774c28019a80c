"""A comparison of two reports (``gradscope diff``, ``check --baseline``): terminal table, Markdown, JSON."""

from __future__ import annotations

import io
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

    c = displayed(c)

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
