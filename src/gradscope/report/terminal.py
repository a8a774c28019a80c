"""The terminal report (rich), in torchinfo's spirit: a header, a layer tree table, a summary, then advice.

Every string goes in as ``Text`` (never markup), so a layer name or message with ``[...]`` prints as written.
Colour is the console's business: with ``color_system=None`` the same calls print plain text.
"""

from __future__ import annotations

from rich import box
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..results import Finding, Report, Severity, Status, Suggestion
from . import _format as fmt

BAR_WIDTH = 20

STATUS_STYLE: dict[Status, str] = {
    Status.OK: "green",
    Status.VANISHING: "bold red",
    Status.EXPLODING: "bold red",
    Status.NONFINITE: "bold red",
    Status.SATURATED: "yellow",
    Status.DEAD: "yellow",
    Status.UNDERFLOW: "yellow",
    Status.FROZEN: "dim",
    Status.DISCONNECTED: "dim",
    Status.ZERO: "dim",
}

SEVERITY_STYLE: dict[Severity, str] = {
    Severity.ERROR: "bold red",
    Severity.WARNING: "yellow",
    Severity.INFO: "cyan",
}

# A trailing label keeps severity readable when there is no colour.
SEVERITY_LABEL: dict[Severity, str] = {
    Severity.ERROR: "✖ error",
    Severity.WARNING: "▲ warning",
    Severity.INFO: "ℹ info",
}


def render_terminal(report: Report, console: Console) -> None:
    """Print the whole report; sections without content (no findings, no fix) are left out."""
    sections: list[RenderableType] = [_header(report), _layer_table(report), _summary_panel(report)]
    if report.findings:
        sections.append(_findings(report.findings))
    if report.suggestions:
        sections.append(_suggestions("Suggestions", report.suggestions))
    if report.fix is not None:
        sections.append(_fix(report))
    for i, section in enumerate(sections):
        if i > 1:  # the table brings its own blank line after the header
            console.print()
        console.print(section)


def _status(status: Status | None) -> Text:
    if status is None:
        return Text(fmt.DASH, style="dim")
    return Text(status.value, style=STATUS_STYLE[status])


def _num(value: float | None) -> Text:
    return Text(fmt.sci(value), style="dim" if value is None else "")


def _header(report: Report) -> Text:
    # Two short lines rather than one long one: a long target path then wraps only its own line.
    m = report.model
    text = Text()
    text.append(m.class_name, style="bold")
    text.append(f"  {m.target}", style="cyan")
    text.append(f"  ·  {fmt.params_text(report)}\n")
    text.append(f"probe  {fmt.probe_text(report)}", style="dim")
    return text


def _layer_table(report: Report) -> Table:
    grad = fmt.grad_scale(report)
    signal = fmt.signal_scale(report)
    # Two kinds of bar on two scales: each spans its own min..max, so decay along the depth is what you see.
    bar_header = Text("log₁₀ grad RMS")
    caption = [] if grad is None else [f"█ grad RMS over {grad.label()}"]
    if signal is not None:
        bar_header.append("  ░ signal", style="dim")
        caption.append(f"░ signal RMS (parameter-free layers) over {signal.label()}")
    table = Table(
        box=box.SIMPLE_HEAD,
        header_style="bold",
        pad_edge=False,
        caption=("log bars: " + "; ".join(caption)) if caption else None,
        caption_style="dim",
        caption_justify="left",
    )
    table.add_column("Layer", no_wrap=True, overflow="ellipsis", max_width=40)
    table.add_column("Type", no_wrap=True, overflow="ellipsis", max_width=18)
    table.add_column("Output shape", no_wrap=True, overflow="ellipsis", max_width=20)
    table.add_column("Grad RMS", justify="right", no_wrap=True)
    table.add_column("Signal RMS", justify="right", no_wrap=True)
    table.add_column(bar_header, no_wrap=True, min_width=BAR_WIDTH)
    table.add_column("Status", no_wrap=True)
    for row in fmt.tree_rows(report.layers):
        indent = "  " * row.level
        layer = row.layer
        if layer is None:
            table.add_row(Text(indent + row.label, style="dim"))
            continue
        if layer.is_parametric:
            bar = Text("" if grad is None else grad.bar(fmt.median(layer.grad_rms), BAR_WIDTH), style="blue")
        else:
            value = fmt.median(layer.signal_rms)
            bar = Text("" if signal is None else signal.bar(value, BAR_WIDTH).replace("█", "░"), style="dim")
        table.add_row(
            Text(indent + row.label, style="" if layer.is_parametric else "dim"),
            Text(layer.type),
            Text(fmt.shape(layer.output_shape)),
            _num(fmt.median(layer.grad_rms)),
            _num(fmt.median(layer.signal_rms)),
            bar,
            _status(layer.status),
        )
    return table


def _verdict(report: Report) -> Text:
    v = fmt.verdict(report)
    if report.healthy:
        style = "bold green" if v.severity in (None, Severity.INFO) else "bold yellow"
    else:
        style = "bold red"
    return Text(v.text, style=style)


def _summary_lines(report: Report) -> list[tuple[str, Text]]:
    s = report.summary
    return [
        ("verdict", _verdict(report)),
        ("worst layer", Text(fmt.worst_text(report))),
        ("decay", Text(fmt.decay_text(s.decay_per_layer))),
        ("forward spread", Text(fmt.spread_text(s.forward_spread_ratio))),
    ]


def _key_value_grid(rows: list[tuple[str, Text]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def _summary_panel(report: Report) -> Panel:
    return Panel(_key_value_grid(_summary_lines(report)), title="Summary", title_align="left", expand=False)


def _hanging(justify: JustifyMethod) -> Table:
    # A label column and a body column: wrapped lines stay under the body instead of running back to column 0.
    grid = Table.grid(padding=(0, 2), pad_edge=False)
    grid.add_column(no_wrap=True, justify=justify)
    grid.add_column()
    return grid


def _findings(findings: tuple[Finding, ...]) -> Group:
    grid = _hanging("left")
    for f in findings:
        body = Text()
        body.append(f.rule, style="bold")
        body.append(f"  {f.message}")
        details = []
        if f.layers:
            details.append(f"layers: {fmt.layer_list(f.layers)}")
        if f.evidence:
            details.append(fmt.mapping(f.evidence))
        if details:
            body.append("\n" + " · ".join(details), style="dim")
        grid.add_row(Text(SEVERITY_LABEL[f.severity], style=SEVERITY_STYLE[f.severity]), body)
    return Group(Text("Findings", style="bold"), Padding(grid, (0, 0, 0, 2)))


def _suggestion_grid(suggestions: tuple[Suggestion, ...]) -> Table:
    grid = _hanging("right")
    for i, s in enumerate(suggestions, 1):
        body = Text()
        body.append(s.remedy.value, style="bold")
        body.append(f"  {fmt.suggestion_target(s)}")
        if s.params:
            body.append(f"\nparams: {fmt.mapping(s.params)}", style="dim")
        body.append(f"\nwhy: {s.reason}", style="dim")
        grid.add_row(Text(f"{i}."), body)
    return grid


def _suggestions(title: str, suggestions: tuple[Suggestion, ...]) -> Group:
    return Group(Text(title, style="bold"), Padding(_suggestion_grid(suggestions), (0, 0, 0, 2)))


def _fix(report: Report) -> Group:
    assert report.fix is not None
    after = report.fix.report
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, title_justify="left")
    table.add_column("Layer", no_wrap=True, overflow="ellipsis", max_width=40)
    table.add_column("Grad RMS before", justify="right", no_wrap=True)
    table.add_column("after", justify="right", no_wrap=True)
    table.add_column("Δ orders", justify="right", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    for row in fmt.fix_rows(report, after):
        change = row.change
        status = _status(fmt.status_of(row.before))
        if fmt.status_of(row.before) != fmt.status_of(row.after):
            status.append(" → ")
            status.append_text(_status(fmt.status_of(row.after)))
        name = row.name if row.before is not None else f"{row.name} (new)"
        table.add_row(
            Text(name, style="" if row.before is not None and row.after is not None else "italic"),
            _num(None if row.before is None else fmt.median(row.before.grad_rms)),
            _num(None if row.after is None else fmt.median(row.after.grad_rms)),
            Text(
                fmt.DASH if change is None else fmt.signed(change, 1), style="dim" if change is None else ""
            ),
            status,
        )
    head = Text("Fix", style="bold")
    head.append(f" — applied {fmt.plural(len(report.fix.applied), 'suggestion')}, re-scanned: ")
    head.append_text(_verdict(after))
    decay = _key_value_grid(
        [
            (
                "decay",
                Text(fmt.decay_change_text(report.summary.decay_per_layer, after.summary.decay_per_layer)),
            )
        ]
    )
    return Group(
        head,
        table,
        decay,
        Text(""),
        Text("Applied", style="bold"),
        Padding(_suggestion_grid(report.fix.applied), (0, 0, 0, 2)),
    )
