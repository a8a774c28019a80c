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

from ..results import Finding, Report, Suggestion
from ..util import displayed
from ..vocab import Severity, Status
from . import fmt

BAR_WIDTH = 20  # widest bar; narrower consoles get narrower bars before numbers get cut
MIN_BAR_WIDTH = 6
TEXT_CAPS = (40, 18, 20)  # widest Layer, Type and Output shape cells before an ellipsis
MIN_TEXT_WIDTH = 6

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
    report = displayed(report)
    sections: list[RenderableType] = [
        _header(report),
        _layer_table(report, console.width),
        _summary_panel(report),
    ]
    if report.findings:
        sections.append(_findings(report.findings))
    if report.suggestions:
        sections.append(_suggestions("Suggestions", report.suggestions))
    if report.fix is not None:
        sections.append(_fix(report))
    for i, section in enumerate(sections):
        if i:
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
    if m.target != m.class_name:  # an in-memory model's target is just its class name
        text.append(f"  {m.target}", style="cyan")
    text.append(f"  ·  {fmt.params_text(report)}\n")
    text.append(f"probe  {fmt.probe_text(report, assumed=False)}", style="dim")
    if report.probe.assumed:
        text.append(f"\nassumed  {fmt.assumed_text(report)}", style="dim")
    return text


def _layer_table(report: Report, console_width: int) -> Group:
    grad = fmt.grad_scale(report)
    signal = fmt.signal_scale(report)
    # Two kinds of bar on two scales: each spans its own min..max, so decay along the depth is what you see.
    caption = [] if grad is None else [f"█ grad RMS over {grad.label()}"]
    if signal is not None:
        caption.append(f"░ signal RMS (parameter-free layers) over {signal.label()}")
    table = _table()
    rows: list[tuple[Text, ...]] = []
    bars: list[tuple[float | None, fmt.LogScale | None, bool]] = []  # drawn once the bar width is known
    for row in fmt.tree_rows(report.layers):
        indent = "  " * row.level
        layer = row.layer
        if layer is None:
            rows.append((Text(indent + row.label, style="dim"),))
            bars.append((None, None, False))
            continue
        rows.append(
            (
                Text(indent + row.label, style="" if layer.is_parametric else "dim"),
                Text(layer.type),
                Text(fmt.shape(layer.output_shape)),
                _num(fmt.median(layer.grad_rms)),
                _num(fmt.median(layer.signal_rms)),
                _status(layer.status),
            )
        )
        if layer.is_parametric:
            bars.append((fmt.median(layer.grad_rms), grad, True))
        else:
            bars.append((fmt.median(layer.signal_rms), signal, False))

    headers = ("Layer", "Type", "Output shape", "Grad RMS", "Signal RMS", "Status")
    widths = [max([len(h), *(r[i].cell_len for r in rows if len(r) > i)]) for i, h in enumerate(headers)]
    widths[:3] = [min(w, cap) for w, cap in zip(widths[:3], TEXT_CAPS, strict=True)]
    # Numbers and statuses never shrink. Names, types and shapes give way (with an ellipsis) only as far as
    # needed for the shortest bar; the bar then takes what is left, up to its full width.
    gaps = 2 * len(headers)  # 2 cells between columns, the bar making the 7th
    widths[:3] = _squeeze(widths[:3], sum(widths) + gaps + MIN_BAR_WIDTH - console_width)
    bar_width = min(max(console_width - sum(widths) - gaps, MIN_BAR_WIDTH), BAR_WIDTH)
    bar_header = next(h for h in ("log₁₀ grad RMS", "log₁₀ RMS", "log₁₀", "log") if len(h) <= bar_width)
    table.add_column("Layer", no_wrap=True, overflow="ellipsis", width=widths[0])
    table.add_column("Type", no_wrap=True, overflow="ellipsis", width=widths[1])
    table.add_column("Output shape" if widths[2] >= 12 else "Shape", no_wrap=True, overflow="ellipsis", width=widths[2])
    table.add_column("Grad RMS", justify="right", no_wrap=True, width=widths[3])
    table.add_column("Signal RMS", justify="right", no_wrap=True, width=widths[4])
    table.add_column(bar_header, no_wrap=True, overflow="crop", width=bar_width)
    table.add_column("Status", no_wrap=True, width=widths[5])
    for cells, (value, scale, own) in zip(rows, bars, strict=True):
        if len(cells) == 1:  # a container row
            table.add_row(cells[0])
            continue
        drawn = "" if scale is None else scale.bar(value, bar_width)
        bar = Text(drawn, style="blue") if own else Text(drawn.replace("█", "░"), style="dim")
        table.add_row(*cells[:5], bar, cells[5])
    legend = Text(("log bars: " + "; ".join(caption)) if caption else "", style="dim")
    return Group(table, legend) if caption else Group(table)


def _table() -> Table:
    # No outer edge and collapsed padding: 2 cells between columns, as in torchinfo; the rule under the header
    # is the only line.
    return Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
        header_style="bold",
    )


def _squeeze(widths: list[int], excess: int) -> list[int]:
    """Take ``excess`` cells from the widest columns first, none below ``MIN_TEXT_WIDTH``."""
    widths = list(widths)
    while excess > 0:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= MIN_TEXT_WIDTH:
            break  # a console this narrow gets rich's own squeezing
        widths[widest] -= 1
        excess -= 1
    return widths


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
        *([("positions", Text(fmt.positions_text(report)))] if report.positions is not None else []),
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
    table = _table()
    table.add_column("Layer", no_wrap=True, overflow="ellipsis", max_width=40)
    table.add_column("Grad RMS before", justify="right", no_wrap=True)
    table.add_column("after", justify="right", no_wrap=True)
    table.add_column("Δ orders", justify="right", no_wrap=True)
    table.add_column("Signal RMS before", justify="right", no_wrap=True)
    table.add_column("after", justify="right", no_wrap=True)
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
            Text(fmt.DASH if change is None else fmt.signed(change, 1), style="dim" if change is None else ""),
            _num(None if row.before is None else fmt.median(row.before.signal_rms)),
            _num(None if row.after is None else fmt.median(row.after.signal_rms)),
            status,
        )
    head = Text("Fix", style="bold")
    head.append(f" — applied {fmt.plural(len(report.fix.applied), 'suggestion')}, re-scanned: ")
    head.append_text(_verdict(after))
    decay = fmt.decay_change_text(report.summary.decay_per_layer, after.summary.decay_per_layer)
    return Group(
        head,
        Padding(table, (1, 0)),  # Group puts no blank lines of its own between parts
        _key_value_grid([("decay", Text(decay))]),
        Padding(Text("Applied", style="bold"), (1, 0, 0, 0)),
        Padding(_suggestion_grid(report.fix.applied), (0, 0, 0, 2)),
        *_fix_extras(report),
    )


def _fix_extras(report: Report) -> list[Padding]:
    """What could not be applied in memory, and the code change that adopts what was."""
    assert report.fix is not None
    parts: list[Padding] = []
    if report.fix.skipped:
        lines = Text()
        for suggestion, why in report.fix.skipped:
            lines.append(f"{suggestion.remedy.value}: {why}\n")
        parts += [Padding(Text("Not applied", style="bold"), (1, 0, 0, 0)), Padding(lines, (0, 0, 0, 2))]
    if report.fix.code:
        parts += [
            Padding(Text("In your code", style="bold"), (1, 0, 0, 0)),
            Padding(Text(report.fix.code), (0, 0, 0, 2)),
        ]
    return parts
