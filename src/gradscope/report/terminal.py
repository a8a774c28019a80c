"""The terminal report (rich), in torchinfo's spirit: a header, a layer tree table, a summary, then advice.

Every string goes in as ``Text`` (never markup), so a layer name or message with ``[...]`` prints as written.
Colour is the console's business: with ``color_system=None`` the same calls print plain text.

Width: every table fits the console. What gives way first is what says least: the bar narrows, then the output
shape goes, then types are shortened (…); a layer name is never cut, it wraps after a dot; numbers are never cut.
The width of text that does not go to a terminal, and the text itself without rich's padding, have their one home
here (``text_width``, ``render_text``): the CLI's pipes and files, ``gradscope diff`` and the pytest plugin use them.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Mapping

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

PLAIN_WIDTH = 120  # the width of text that goes to a pipe or a file, unless COLUMNS says otherwise
BAR_WIDTH = 20  # widest bar; narrower consoles get narrower bars before anything else gives way
MIN_BAR_WIDTH = 6
MIN_TYPE_WIDTH = 8  # a type is shortened (…) down to this
MIN_NAME_WIDTH = 12  # a layer name wraps (after a dot) down to this; it is never cut

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
    Status.GATED: "dim",  # closed by design at init: opens when training
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


def text_width(environ: Mapping[str, str] | None = None) -> int:
    """The width of text that does not go to a terminal: ``COLUMNS`` when it is a positive number, else 120."""
    value = (os.environ if environ is None else environ).get("COLUMNS", "")
    return int(value) if value.isdigit() and int(value) > 0 else PLAIN_WIDTH


_TRAILING = re.compile(r"(?:[ \t]|\x1b\[[0-9;]*m)+$")
_SGR = re.compile(r"\x1b\[[0-9;]*m")


def strip_trailing(text: str) -> str:
    """Every line without its trailing blanks (rich pads cells to the column width); colour codes among them are
    kept, so a style still ends where it did."""
    lines = []
    for line in text.split("\n"):
        match = _TRAILING.search(line)
        lines.append(line if match is None else line[: match.start()] + "".join(_SGR.findall(match.group())))
    return "\n".join(lines)


def render_text(draw: Callable[[Console], None], width: int | None = None, *, color: bool = False) -> str:
    """What ``draw(console)`` prints at ``width`` (default ``text_width()``), as text without trailing blanks."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width or text_width(),
        color_system="standard" if color else None,
        force_terminal=color,
        no_color=not color,
        highlight=False,
    )
    draw(console)
    return strip_trailing(buffer.getvalue())


def render_terminal(report: Report, console: Console, *, probe: tuple[str, str] | None = None) -> None:
    """Print the whole report; sections without content (no findings, no fix) are left out. ``probe``: the label
    and text of the header's second line, for a report that does not come from a probe (a watched run)."""
    report = displayed(report)
    sections: list[RenderableType] = [
        _header(report, probe),
        _layer_table(report, console.width),
        _summary_panel(report),
    ]
    if report.findings:
        sections.append(_findings(report.findings))
    if report.suggestions:
        sections.append(_suggestions("Suggestions", report.suggestions))
    if report.fix is not None:
        sections.append(_fix(report, console.width))
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


def _header(report: Report, probe: tuple[str, str] | None) -> Group:
    # Short lines rather than one long one: a long target path then wraps only its own line; a wrapped probe
    # line stays under its text, not under its label.
    m = report.model
    text = Text()
    text.append(m.class_name, style="bold")
    if m.target != m.class_name:  # an in-memory model's target is just its class name
        text.append(f"  {m.target}", style="cyan")
    text.append(f"  ·  {fmt.params_text(report)}")
    label, line = probe or ("probe", fmt.probe_text(report, assumed=False))
    rows = [(label, Text(line, style="dim"))]
    if report.probe.assumed and probe is None:
        rows.append(("assumed", Text(fmt.assumed_text(report), style="dim")))
    grid = Table.grid(padding=(0, 2), pad_edge=False)
    grid.add_column(no_wrap=True, style="dim")
    grid.add_column()
    for key, value in rows:
        grid.add_row(key, value)
    return Group(text, grid)


def _layer_table(report: Report, console_width: int) -> Group:
    grad = fmt.grad_scale(report)
    signal = fmt.signal_scale(report)
    # Two kinds of bar on two scales: each spans its own min..max, so decay along the depth is what you see.
    caption = [] if grad is None else [f"█ grad RMS {grad.label()}"]
    if signal is not None:
        caption.append(f"░ signal RMS (parameter-free layers) {signal.label()}")
    tree = fmt.tree_rows(report.layers)
    cells: list[tuple[Text, ...]] = []  # Type, Output shape, Grad RMS, Signal RMS, Status; () for a container
    bars: list[tuple[float | None, fmt.LogScale | None, bool]] = []  # drawn once the bar width is known
    for row in tree:
        layer = row.layer
        if layer is None:
            cells.append(())
            bars.append((None, None, False))
            continue
        cells.append(
            (
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

    def natural(i: int, header: str) -> int:
        return max([len(header), *(c[i].cell_len for c in cells if c)])

    def name_width(step: int) -> int:
        return max([5, *(step * row.level + len(row.label) for row in tree)])

    step = 2
    widths = {
        "Layer": name_width(step),
        "Type": natural(0, "Type"),
        "Output shape": natural(1, "Output shape"),
        "Grad RMS": natural(2, "Grad RMS"),
        "Signal RMS": natural(3, "Signal RMS"),
        "bar": BAR_WIDTH,
        "Status": natural(4, "Status"),
    }

    def excess() -> int:
        return sum(widths.values()) + 2 * (len(widths) - 1) - console_width

    # What gives way, in order: the bar narrows, the shape goes, types shorten, the tree indents by one, names
    # wrap; on a console narrower still, the bar goes. Numbers and statuses never shrink.
    widths["bar"] = max(MIN_BAR_WIDTH, BAR_WIDTH - max(excess(), 0))
    if excess() > 0:
        del widths["Output shape"]
    if excess() > 0:
        widths["Type"] = max(min(MIN_TYPE_WIDTH, widths["Type"]), widths["Type"] - excess())
    if excess() > 0:
        step = 1
        widths["Layer"] = name_width(step)
    if excess() > 0:
        widths["Layer"] = max(min(MIN_NAME_WIDTH, widths["Layer"]), widths["Layer"] - excess())
    if excess() > 0:
        del widths["bar"]
    bar_width = widths.get("bar", 0)

    table = _table()
    table.add_column("Layer", width=widths["Layer"], overflow="fold")
    table.add_column("Type", no_wrap=True, overflow="ellipsis", width=widths["Type"])
    if "Output shape" in widths:
        table.add_column("Output shape", no_wrap=True, width=widths["Output shape"])
    table.add_column("Grad RMS", justify="right", no_wrap=True, width=widths["Grad RMS"])
    table.add_column("Signal RMS", justify="right", no_wrap=True, width=widths["Signal RMS"])
    if bar_width:
        bar_header = next(h for h in ("log₁₀ grad RMS", "log₁₀ RMS", "log₁₀", "log") if len(h) <= bar_width)
        table.add_column(bar_header, no_wrap=True, overflow="crop", width=bar_width)
    table.add_column("Status", no_wrap=True, width=widths["Status"])
    for row, row_cells, (value, scale, own) in zip(tree, cells, bars, strict=True):
        name = _tree_label(row.level * step, row.label, widths["Layer"])
        if not row_cells:  # a container row
            table.add_row(Text(name, style="dim"))
            continue
        layer_type, shape, grad_rms, signal_rms, status = row_cells
        name_cell = Text(name, style="" if row.layer is not None and row.layer.is_parametric else "dim")
        middle = [shape] if "Output shape" in widths else []
        drawn = "" if scale is None or not bar_width else scale.bar(value, bar_width)
        bar = [Text(drawn, style="blue") if own else Text(drawn.replace("█", "░"), style="dim")] if bar_width else []
        table.add_row(name_cell, layer_type, *middle, grad_rms, signal_rms, *bar, status)
    notes = ["log bars: " + "; ".join(caption)] if caption and bar_width else []
    hidden = [what for key, what in (("Output shape", "output shapes"), ("bar", "log bars")) if key not in widths]
    if hidden:  # say what a narrow console left out, and where it still is
        notes.append(f"{' and '.join(hidden)} left out at {console_width} columns: a wider terminal shows them")
    return Group(table, Text("\n".join(notes), style="dim")) if notes else Group(table)


def _tree_label(indent: int, label: str, width: int) -> str:
    """A tree row's label, indented; one too long for the column wraps after a dot, each line indented alike."""
    room = max(width - indent, 4)
    return "\n".join(" " * indent + piece for piece in fmt.wrap_name(label, room))


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


def _fix(report: Report, console_width: int) -> Group:
    assert report.fix is not None
    after = report.fix.report
    rows = fmt.fix_rows(report, after)
    numbers: list[tuple[Text, ...]] = []
    statuses: list[Text] = []
    for row in rows:
        change = row.change
        status = _status(fmt.status_of(row.before))
        if fmt.status_of(row.before) != fmt.status_of(row.after):
            status.append(" → ")
            status.append_text(_status(fmt.status_of(row.after)))
        statuses.append(status)
        numbers.append(
            (
                _num(None if row.before is None else fmt.median(row.before.grad_rms)),
                _num(None if row.after is None else fmt.median(row.after.grad_rms)),
                Text(fmt.DASH if change is None else fmt.signed(change, 1), style="dim" if change is None else ""),
                _num(None if row.before is None else fmt.median(row.before.signal_rms)),
                _num(None if row.after is None else fmt.median(row.after.signal_rms)),
            )
        )
    names = [row.name if row.before is not None else f"{row.name} (new)" for row in rows]
    # Two-line headers keep the number columns as narrow as their numbers.
    headers = ("Grad RMS\nbefore", "\nafter", "Δ\norders", "Signal RMS\nbefore", "\nafter")
    number_widths = [
        max([max(len(part) for part in h.split("\n")), *(cells[i].cell_len for cells in numbers)])
        for i, h in enumerate(headers)
    ]
    name_width = max([5, *(len(n) for n in names)])
    status_width = max([6, *(s.cell_len for s in statuses)])
    fixed = sum(number_widths) + 2 * (len(headers) + 1)
    if fixed + name_width + status_width > console_width:  # names wrap first, then the status at its arrow
        name_width = max(MIN_NAME_WIDTH, console_width - fixed - status_width)
    if fixed + name_width + status_width > console_width:
        longest_word = max([6, *(len(word) for st in statuses for word in st.plain.split(" → "))])
        status_width = max(longest_word + 2, console_width - fixed - name_width)
    table = _table()
    table.add_column("\nLayer", width=name_width, overflow="fold")
    for header, width in zip(headers, number_widths, strict=True):
        table.add_column(header, justify="right", no_wrap=True, width=width)
    table.add_column("\nStatus", width=status_width)
    for row, name, cells, status in zip(rows, names, numbers, statuses, strict=True):
        style = "" if row.before is not None and row.after is not None else "italic"
        table.add_row(Text("\n".join(fmt.wrap_name(name, name_width)), style=style), *cells, status)
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
        *_fix_extras(report, console_width),
    )


def _fix_extras(report: Report, console_width: int) -> list[Padding]:
    """What could not be applied in memory, and the code change that adopts what was."""
    assert report.fix is not None
    parts: list[Padding] = []
    if report.fix.skipped:
        lines = Text()
        for suggestion, why in report.fix.skipped:
            lines.append(f"{suggestion.remedy.value}: {why}\n")
        parts += [Padding(Text("Not applied", style="bold"), (1, 0, 0, 0)), Padding(lines, (0, 0, 0, 2))]
    if report.fix.code:
        # Folded here, never by rich: a wrapped comment keeps its "#", code breaks only where Python allows.
        code = "\n".join(fmt.code_lines(report.fix.code, console_width - 2))
        parts += [
            Padding(Text("In your code", style="bold"), (1, 0, 0, 0)),
            Padding(Text(code, no_wrap=True, overflow="ignore"), (0, 0, 0, 2)),
        ]
    return parts
