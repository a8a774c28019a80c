"""Renderers for ``gradscope trial``: the terminal comparison (with one loss sparkline per run) and the JSON.

The chart: every run's training-loss curve as a row of block characters on ONE shared linear scale (the
lowest to the highest finite loss of all runs), so rows compare directly and a flat row at the top is a model
that did not learn. Column j covers the same steps in every row; ``✗`` marks where a run diverged, and the row
stops there. It needs no colour. Like the other renderers this takes the result data only: no torch, no model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..util import displayed
from . import fmt

if TYPE_CHECKING:  # pragma: no cover
    from ..trial import Run, TrialReport

LEVELS = "▁▂▃▄▅▆▇█"
DIVERGED_MARK = "✗"
MIN_CHART = 16
MAX_CHART = 60
CHART_MARGIN = 68  # what the other columns take at most; the chart gets the rest of the console


def render_trial_json(report: TrialReport) -> str:
    # allow_nan=False: to_dict writes non-finite values as null; one slipping through must fail here.
    return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"


def render_trial_terminal(report: TrialReport, console: Console) -> None:
    report = displayed(report)
    sections: list[RenderableType] = [_header(report), _runs_table(report, console.width), _verdict(report)]
    remedies = _remedies(report)
    if remedies is not None:
        sections.append(remedies)
    for i, section in enumerate(sections):
        if i:
            console.print()
        console.print(section)


# ------------------------------------------------------------------------------------------------- parts


def _header(report: TrialReport) -> Text:
    text = Text()
    text.append("Trial", style="bold")
    if report.target:
        text.append(f"  {report.target}", style="cyan")
    text.append(
        f"  ·  {report.steps} steps, {report.optimizer.value} lr {report.lr:g}, "
        f"batch {report.batch_size}, seed {report.seed}\n"
    )
    d = report.data
    source = "dataset()" if d.source == "dataset" else "synthetic Gaussian clusters (file has no dataset())"
    kind = f"{d.classes} classes, cross-entropy" if d.task.value == "classification" else "regression, MSE"
    text.append(f"data   {source}: {d.train} train / {d.test} held out, {kind}", style="dim")
    if report.note:
        text.append(f"\nnote   {report.note}", style="dim")
    return text


def chart_width(console_width: int, points: int) -> int:
    """Columns for the loss chart: what the console leaves, within MIN_CHART..MAX_CHART. With fewer points than
    that, a whole number of columns per point, so every point is drawn equally wide."""
    width = min(MAX_CHART, max(MIN_CHART, console_width - CHART_MARGIN))
    return width if points >= width else points * (width // points)


def sparkline(curve: Sequence[float | None], points: int, width: int, lo: float, hi: float) -> str:
    """``curve`` (≤ ``points`` values; a prefix when the run stopped early) as ``width`` block characters.

    Column j averages the points ⌊j·P/W⌋ … ⌊(j+1)·P/W⌋−1; a column with a non-finite value is ``✗`` and ends
    the line; columns past the end of the curve are blank."""
    out: list[str] = []
    for j in range(width):
        a, b = j * points // width, max((j + 1) * points // width, j * points // width + 1)
        chunk = list(curve[a:b])
        if not chunk:
            break
        values = [v for v in chunk if v is not None and math.isfinite(v)]
        if len(values) < len(chunk):
            out.append(DIVERGED_MARK)
            break
        mean = math.fsum(values) / len(values)
        level = 0 if hi <= lo else round((mean - lo) / (hi - lo) * (len(LEVELS) - 1))
        out.append(LEVELS[min(max(level, 0), len(LEVELS) - 1)])
    return "".join(out).ljust(width)


def _bounds(runs: Sequence[Run]) -> tuple[float, float]:
    finite = [v for r in runs for v in r.curve if v is not None and math.isfinite(v)]
    return (min(finite), max(finite)) if finite else (0.0, 1.0)


def _runs_table(report: TrialReport, console_width: int) -> Group:
    points = min(report.steps, 100)
    width = chart_width(console_width, points)
    lo, hi = _bounds(report.runs)
    classes = report.data.task.value == "classification"
    table = Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True, header_style="bold"
    )
    table.add_column("Run", no_wrap=True, overflow="ellipsis", max_width=16)
    header = next(
        h
        for h in (f"Training loss, step 1 → {report.steps}", f"Loss, step 1 → {report.steps}", "Loss", "")
        if len(h) <= width
    )
    table.add_column(header, no_wrap=True, overflow="crop", width=width)
    table.add_column("Train loss", justify="right", no_wrap=True)
    table.add_column("Test loss", justify="right", no_wrap=True)
    if classes:
        table.add_column("Test acc", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for run in report.runs:
        line = sparkline(run.curve, points, width, lo, hi)
        cells = [
            Text(run.remedy, style="bold" if run.remedy == report.best else ""),
            Text(line, style="red" if run.diverged else ("green" if run.remedy == report.best else "")),
            _loss(run.final_train_loss),
            _loss(run.test_loss),
        ]
        if classes:
            cells.append(_acc(run.test_accuracy))
        cells.append(_mark(report, run))
        table.add_row(*cells)
    if width >= points:
        unit = "one step" if points == report.steps else f"{report.steps / points:g} steps"
        columns = f"{unit} = {fmt.plural(width // points, 'column')}"
    else:
        columns = f"one column ≈ {report.steps / width:.3g} steps"
    legend = Text(
        f"shared linear scale: {LEVELS[0]} {_g(lo)} … {LEVELS[-1]} {_g(hi)}; {columns}; "
        f"{DIVERGED_MARK} diverged (non-finite loss)",
        style="dim",
    )
    return Group(table, legend)


def _mark(report: TrialReport, run: Run) -> Text:
    if run.diverged:
        return Text(f"diverged at step {run.steps_run}", style="bold red")
    if run.remedy == report.best:
        return Text("★ best, helps", style="bold green") if report.helps else Text("★ best", style="bold")
    if run.remedy == "none":
        return Text("untreated", style="dim")
    return Text("")


def _verdict(report: TrialReport) -> Text:
    text = Text()
    none = report.runs[0]
    if report.best is None:
        if len(report.runs) == 1:
            text.append("Only the untreated model was trained.", style="bold")
        else:
            text.append("No remedy finished: every treated run diverged.", style="bold red")
        return text
    best = next(r for r in report.runs if r.remedy == report.best)
    classes = report.data.task.value == "classification"
    text.append("Best: ", style="bold")
    text.append(best.remedy, style="bold")
    if none.diverged:
        text.append(" — the untreated model diverged and this did not")
    elif classes:
        gain = (best.test_accuracy or 0.0) - (none.test_accuracy or 0.0)
        text.append(
            f" — held-out accuracy {_acc_text(best.test_accuracy)} vs "
            f"{_acc_text(none.test_accuracy)} untreated ({fmt.signed(gain, 3)})"
        )
    else:
        text.append(f" — held-out loss {_g(best.test_loss)} vs {_g(none.test_loss)} untreated")
        if best.test_loss is not None and none.test_loss:
            text.append(f" ({fmt.signed(100 * (best.test_loss / none.test_loss - 1), 0)} %)")
    if report.helps:
        text.append(". It helps", style="bold green")
    else:
        text.append(". It does not clearly help", style="bold yellow")
    text.append(f" (margin: {report.margin}).")
    if report.caveat:
        text.append(f"\nBut {report.caveat}.", style="yellow")
    return text


def _remedies(report: TrialReport) -> RenderableType | None:
    treated = report.runs[1:]
    if not treated:
        return None
    grid = Table.grid(padding=(0, 2), pad_edge=False)
    grid.add_column(no_wrap=True)
    grid.add_column()
    for run in treated:
        body = Text()
        for i, s in enumerate(run.applied):
            if i:
                body.append("\n")
            body.append(fmt.suggestion_target(s))
            if s.params:
                body.append(f"  ({fmt.mapping(_short_params(s.params))})", style="dim")
        for s, why in run.skipped:
            if body:
                body.append("\n")
            body.append(f"skipped {s.remedy.value}: {why}", style="yellow")
        grid.add_row(Text(run.remedy, style="bold"), body)
    return Group(Text("What each run changed", style="bold"), Padding(grid, (0, 0, 0, 2)))


def _short_params(params: Any) -> dict[str, Any]:
    # Per-layer maps (rescale gains, mixed norms) and parameter lists are long and already said by the target.
    return {k: v for k, v in dict(params).items() if not isinstance(v, (dict, list, tuple))}


def _loss(value: float | None) -> Text:
    return Text(_g(value), style="dim" if value is None else "")


def _acc(value: float | None) -> Text:
    return Text(_acc_text(value), style="dim" if value is None else "")


def _acc_text(value: float | None) -> str:
    return fmt.DASH if value is None else f"{value:.3f}"


def _g(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return fmt.DASH if value is None else fmt.sci(value)
    if value == 0:
        return "0"
    # "#": keep trailing zeros, so 2.30 and 2.31 line up and read as the same precision
    return f"{value:#.3g}" if 1e-3 <= abs(value) < 1e5 else fmt.sci(value)
