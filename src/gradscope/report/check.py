"""The verdict of ``gradscope check`` as text: the line, the table of checks, the Markdown summary.

The scan report itself is rendered by the terminal/markdown renderers; this adds the check's verdict on top.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..ci.policy import BASELINE_RULE, CheckResult, State, group
from ..util import displayed, md_cell
from . import fmt
from .markdown import markdown_table, render_markdown


def _evidence_text(evidence: Mapping[str, Any], limit: int = 6) -> str:
    items = list(evidence.items())[:limit]
    return ", ".join(f"{k}={fmt.num(v)}" for k, v in items)


def verdict_line(result: CheckResult) -> str:
    failures = result.failures
    known = sum(1 for c in result.checks if c.state is State.KNOWN)
    warns = sum(1 for c in result.checks if c.state is State.WARN)
    head = "PASSED" if result.passed else f"FAILED: {len(failures)} failing check{'s' if len(failures) != 1 else ''}"
    extras = []
    if warns:
        extras.append(f"{warns} below --fail-on {result.fail_on}")
    if known:
        extras.append(f"{known} known in the baseline")
    return head + (f" ({', '.join(extras)})" if extras else "")


def summary_rows(result: CheckResult, *, limit: int | None = None) -> list[tuple[str, str, str, str, str]]:
    """(state, severity, rule, layers, message) per group of checks that are not ignored, failures first."""
    order = {State.FAIL: 0, State.WARN: 1, State.KNOWN: 2, State.IGNORED: 3}
    rows = []
    for (rule, state, severity), checks in sorted(group(result.checks), key=lambda g: order[g[0][1]]):
        if state is State.IGNORED:
            continue
        names = [c.layer for c in checks]
        first = checks[0]
        message = first.message
        if rule == BASELINE_RULE and len(checks) > 1:
            message = f"{len(checks)} layers moved beyond the allowed factor; first: '{first.layer}': {message}"
        rows.append((state.value, "—" if severity is None else severity.value, rule, fmt.layer_list(names), message))
    return rows if limit is None else rows[:limit]


def print_check(result: CheckResult, console: Any) -> None:
    """The verdict block printed after the report: the failing checks, then the comparison headline."""
    from rich.table import Table
    from rich.text import Text

    result = displayed(result)

    style = {"fail": "bold red", "warn": "yellow", "known": "dim", "ignored": "dim"}
    console.print()
    title = Text("gradscope check  ", style="bold")
    title.append(verdict_line(result), style="bold green" if result.passed else "bold red")
    console.print(title)
    # A grid, not padded strings: a long layer list or message wraps under its own column.
    grid = Table.grid(padding=(0, 1), pad_edge=False)
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column()
    for state, severity, rule, layers, message in summary_rows(result):
        body = Text(rule, style="bold" if state == "fail" else "")
        body.append(f"  {layers}\n{message}", style="" if state == "fail" else "dim")
        grid.add_row(Text(f"  {state}", style=style[state]), Text(severity, style=style[state]), body)
    if grid.row_count:
        console.print(grid)
    if result.comparison is not None:
        from .diff import headline

        c = result.comparison
        console.print(Text(f"baseline {c.baseline_label}: {headline(c)}", style="dim"))
        for note in c.notes:
            console.print(Text(f"note: {note}", style="yellow"))


def check_markdown(result: CheckResult, *, full_report: bool = True) -> str:
    """A Markdown summary for a CI step summary or a PR comment: verdict, failing checks table, comparison."""
    result = displayed(result)
    report = result.report
    icon = "✅" if result.passed else "❌"
    parts = [
        f"## {icon} gradscope check: `{md_cell(report.model.class_name)}` — {md_cell(verdict_line(result))}",
        f"Target `{md_cell(report.model.target)}` · fail on `{result.fail_on}`"
        + (f" · baseline `{md_cell(result.comparison.baseline_label)}`" if result.comparison else ""),
    ]
    rows = summary_rows(result)
    if rows:
        icons = {"fail": "❌ fail", "warn": "⚠️ warn", "known": "➖ known", "ignored": "ignored"}
        table_rows = [[icons[s], sev, f"`{r}`", md_cell(layers), md_cell(msg)] for s, sev, r, layers, msg in rows]
        parts.append(markdown_table(table_rows, ["Check", "Severity", "Rule", "Layers", "Message"]))
    else:
        parts.append("No findings.")
    failures = result.failures
    if failures:
        lines = [f"- `{c.rule}` on `{md_cell(c.layer)}`: {md_cell(_evidence_text(c.evidence))}" for c in failures[:20]]
        if len(failures) > 20:
            lines.append(f"- … and {len(failures) - 20} more (see the JUnit report)")
        parts.append(
            "<details><summary>Failing checks with evidence</summary>\n\n" + "\n".join(lines) + "\n\n</details>"
        )
    if result.comparison is not None:
        from .diff import render_comparison_markdown

        parts.append(render_comparison_markdown(result.comparison, level=3).rstrip("\n"))
    if full_report:
        body = render_markdown(report).replace("\n## ", "\n### ")
        if body.startswith("## "):
            body = "#" + body
        parts.append(f"<details><summary>Full scan report</summary>\n\n{body.rstrip()}\n\n</details>")
    return "\n\n".join(parts) + "\n"
