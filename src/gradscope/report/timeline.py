"""Renderers for a watched run (``gradscope report run.jsonl``): a layers × steps heatmap, the first step at which
each layer went bad, then the Report of the last steps rendered as ``scan``'s. Pure string work on timeline data.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.text import Text

from ..util import displayed
from ..watching.timeline import EMPTY, EVENTS, Cell, Timeline
from .fmt import plural, sci, wrap_name

SHADES = " ░▒▓█"  # low → high, on a log scale fitted to the run's own range
NONFINITE_CELL = "!"
MISSING_CELL = "·"
TIMELINE_SCHEMA = "gradscope.timeline/1"


def columns(steps: Sequence[int], width: int) -> list[list[int]]:
    """Indices of the timeline's columns grouped into at most ``width`` (consecutive, near-equal groups)."""
    n = len(steps)
    if n <= width:
        return [[i] for i in range(n)]
    return [list(range(c * n // width, (c + 1) * n // width)) for c in range(width)]


def _cell_value(row: Sequence[Cell], group: Sequence[int]) -> float | None:
    """The group's cells as one: the geometric mean of every positive value in them, NaN if any was not finite,
    None if none was measured."""
    total = EMPTY
    for i in group:
        total = total + row[i]
    return total.value


def _bounds(rows: Sequence[Sequence[float | None]]) -> tuple[float, float] | None:
    logs = [math.log10(v) for row in rows for v in row if v is not None and math.isfinite(v) and v > 0]
    if not logs:
        return None
    lo, hi = min(logs), max(logs)
    return lo, max(hi, lo + 1.0)


def shade(value: float | None, bounds: tuple[float, float] | None) -> str:
    if value is None:
        return MISSING_CELL
    if not math.isfinite(value):
        return NONFINITE_CELL
    if value <= 0 or bounds is None:
        return SHADES[0]
    lo, hi = bounds
    x = (math.log10(value) - lo) / (hi - lo)
    return SHADES[min(len(SHADES) - 1, max(1, 1 + int(x * (len(SHADES) - 1))))]


def heatmap_lines(t: Timeline, width: int) -> list[str]:
    """The heatmap in lines of at most ``width`` cells. Rows are labelled with the layer names when they fit in a
    third of the width; otherwise with numbers, and a legend of the full names follows (a name is never cut)."""
    names = [n or "(model)" for n in t.names]
    label = max([len(n) for n in names] + [5])
    numbered = label > max(12, width // 3)
    if numbered:
        names = [str(i) for i in range(1, len(names) + 1)]
        label = max(len(n) for n in names)
    cols = columns(t.steps, max(8, width - label - 3))
    bounds = _bounds(t.rows)
    lines = []
    for name, row in zip(names, t.cells, strict=True):
        cells = "".join(shade(_cell_value(row, g), bounds) for g in cols)
        lines.append(f"{name:>{label}} │{cells}│" if numbered else f"{name:<{label}} │{cells}│")
    if cols:
        first, last = t.columns[cols[0][0]].first, t.columns[cols[-1][-1]].last
        axis = f"step {first}"
        end = f"{last}"
        span = len(cols)
        lines.append(" " * label + " └" + "─" * span + "┘")
        gap = max(1, span - len(axis) - len(end) + 2)
        lines.append(" " * label + "  " + axis + " " * gap + end)
    if bounds is not None:
        legend = (
            f"{t.stat}: '{SHADES[1]}' ≈ {sci(10 ** bounds[0])} … '{SHADES[-1]}' ≈ {sci(10 ** bounds[1])} "
            f"(log scale); '{NONFINITE_CELL}' non-finite, '{MISSING_CELL}' not measured"
        )
        lines += textwrap.wrap(legend, width, break_on_hyphens=False)
    if numbered:
        for i, name in enumerate(t.names, 1):
            pieces = wrap_name(name or "(model)", max(width - label - 2, 8))
            lines += [f"{str(i) if not k else '':>{label}}  {piece}" for k, piece in enumerate(pieces)]
    return lines


def event_rows(t: Timeline) -> list[tuple[str, list[str]]]:
    rows = []
    for name in [m.name for m in t.run.layers]:
        events = t.first.get(name)
        if events:
            rows.append((name or "(model)", [str(events[e]) if e in events else "—" for e in EVENTS]))
    return rows


def render_timeline_terminal(t: Timeline, console: Console) -> None:
    from rich import box
    from rich.table import Table

    t = displayed(t)  # layer names and the target come from the user's files; the JSON keeps them exact

    from .terminal import render_terminal

    run = t.run
    meta = run.meta
    head = Text(
        f"gradscope watch · {meta.get('model', 'model')} · mode {meta.get('mode', '?')} · every "
        f"{meta.get('every', '?')} · {t.recorded} recorded steps",
        style="bold",
    )
    console.print(head)
    if t.skipped.count:
        console.print(Text(f"{skipped_line(t)}: left out of the heatmap and the report", style="yellow"))
    if run.skipped_lines:
        console.print(
            Text(f"{run.skipped_lines} unreadable line(s) skipped (a torn last line from a crash?)", style="yellow")
        )
    console.print()
    console.print(Text(f"{t.stat} per layer (rows) over steps (columns)", style="bold"))
    for line in heatmap_lines(t, console.width):
        console.print(Text(line), no_wrap=True, crop=False)
    console.print()
    events = event_rows(t)
    if events:
        console.print(Text("first step at which a layer went bad", style="bold"))
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True)
        room = console.width - sum(max(len(e), 2) + 2 for e in EVENTS)
        name_width = min(max(len(n) for n, _ in [*events, ("layer", [])]), max(room, 12))
        table.add_column("layer", width=name_width, overflow="fold")
        for event in EVENTS:
            table.add_column(event, justify="right", no_wrap=True)
        for name, cells in events:
            table.add_row(Text("\n".join(wrap_name(name, name_width))), *cells)
        console.print(table)
    else:
        console.print(Text("no layer vanished, exploded or went non-finite at any recorded step", style="green"))
    console.print()
    console.print(Text(f"report of the last {plural(t.report.probe.batches, 'recorded step')}", style="bold"))
    render_terminal(t.report, console, probe=("run", run_text(t)))


def run_text(t: Timeline) -> str:
    """What the report of a watched run rests on, in place of a probe's batches and seed: ``training log: steps
    8–14 (4 recorded, every 2nd step sampled), batch 32, cpu, float32; judged for adam``."""
    meta, p = t.run.meta, t.report.probe
    every = meta.get("every")
    sampled = "every step" if every in (1, None) else f"every {_ordinal(every)} step"
    span = p.loss.removeprefix("training loss, ").removeprefix("training loss")
    span = f"{span} " if span else ""
    size = f", batch {p.batch_size}" if p.batch_size is not None else ""
    return (
        f"training log: {span}({plural(p.batches, 'recorded step')}, {sampled} sampled){size}, {p.device}, "
        f"{p.dtype}; judged for {p.optimizer}"
    )


def _ordinal(n: object) -> str:
    if not isinstance(n, int):
        return f"{n}th"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def skipped_line(t: Timeline) -> str:
    """``1 step skipped (3): the optimizer did not step on its gradients (...)``."""
    from ..watching.timeline import SKIP_REASON

    return f"{t.skipped.text()}: {SKIP_REASON}"


def timeline_dict(t: Timeline) -> dict[str, Any]:
    """The ``gradscope.timeline/1`` document (README, "The timeline JSON")."""
    from ..results import json_safe

    data: dict[str, Any] = json_safe(
        {
            "schema": TIMELINE_SCHEMA,
            "source": t.run.source,
            "meta": {k: v for k, v in t.run.meta.items() if k != "layers"},
            "skipped_lines": t.run.skipped_lines,
            "recorded_steps": t.recorded,
            "skipped_steps": {"count": t.skipped.count, "steps": list(t.skipped.steps)},
            "stat": t.stat,
            "steps": list(t.steps),
            "columns": [{"first": c.first, "last": c.last, "count": c.count} for c in t.columns],
            "layers": list(t.names),
            "values": [list(r) for r in t.rows],
            "loss": [c.loss for c in t.columns],
            "first": {name: dict(events) for name, events in t.first.items()},
            "report": t.report.to_dict(),
        }
    )
    return data


def render_timeline_json(t: Timeline) -> str:
    return json.dumps(timeline_dict(t), indent=2, allow_nan=False) + "\n"


def render_timeline_markdown(t: Timeline) -> str:
    from .markdown import render_markdown

    t = displayed(t)

    meta = t.run.meta
    out = [
        f"# gradscope watch: {meta.get('model', 'model')}",
        "",
        f"mode `{meta.get('mode', '?')}`, every {meta.get('every', '?')} step(s), {t.recorded} recorded "
        f"steps ({t.columns[0].first}–{t.columns[-1].last})"
        if t.columns
        else "no steps",
        "",
        *([f"{skipped_line(t)}; left out of the heatmap and the report.", ""] if t.skipped.count else []),
        f"## {t.stat} over steps",
        "",
        "```",
        *heatmap_lines(t, 100),
        "```",
        "",
        "## First bad step",
        "",
    ]
    events = event_rows(t)
    if events:
        out += ["| layer | " + " | ".join(EVENTS) + " |", "|---|" + "---:|" * len(EVENTS)]
        out += [f"| `{name}` | " + " | ".join(cells) + " |" for name, cells in events]
    else:
        out.append("No layer vanished, exploded or went non-finite at any recorded step.")
    out += [
        "",
        f"## Report of the last {t.report.probe.batches} recorded step(s)",
        "",
        render_markdown(t.report).replace("\n# ", "\n### "),
    ]
    return "\n".join(out).rstrip() + "\n"
