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
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..trial.results import TOKEN_LAG
from ..util import displayed
from . import fmt

if TYPE_CHECKING:  # pragma: no cover
    from ..trial import Arm, TrialReport

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
        f"batch {report.batch_size}, {_seeds(report)}\n"
    )
    d = report.data
    source = {
        "dataset": "dataset()",
        "synthetic": "synthetic Gaussian clusters (file has no dataset())",
        "synthetic_tokens": f"synthetic tokens, label = the token {TOKEN_LAG} back (file has no dataset())",
    }.get(d.source, d.source)
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


def _seeds(report: TrialReport) -> str:
    seeds = report.seeds
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    what = "" if report.init_varies else " (same init; order and dropout vary)"
    return f"seeds {seeds[0]}–{seeds[-1]}{what}"


def _bounds(arms: Sequence[Arm]) -> tuple[float, float]:
    finite = [v for a in arms for v in a.curve if v is not None and math.isfinite(v)]
    return (min(finite), max(finite)) if finite else (0.0, 1.0)


def _runs_table(report: TrialReport, console_width: int) -> Group:
    """One row per arm. The columns of numbers take what they need; the chart gets the rest of the console (within
    MIN_CHART..MAX_CHART); when even the smallest chart does not fit, the loss columns go first."""
    points = min(report.steps, 100)
    lo, hi = _bounds(report.arms)
    several = len(report.seeds) > 1
    classes = report.data.task.value == "classification"
    columns: list[tuple[str, list[Text]]] = [
        ("Train loss", [_loss(a.train_loss.mean if a.train_loss else None) for a in report.arms]),
        ("Test loss", [_loss(a.test_loss.mean if a.test_loss else None) for a in report.arms]),
    ]
    if classes:
        columns.append(("Test acc (min–max)" if several else "Test acc", [_acc(a, several) for a in report.arms]))

    def table(width: int, cols: list[tuple[str, list[Text]]]) -> Table:
        t = Table(
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            padding=(0, 1),
            collapse_padding=True,
            header_style="bold",
        )
        t.add_column("Remedy", no_wrap=True)
        header = next(
            h
            for h in (f"Training loss, step 1 → {report.steps}", f"Loss, step 1 → {report.steps}", "Loss", "")
            if len(h) <= width
        )
        t.add_column(header, no_wrap=True, overflow="crop", width=width)
        for title, _ in cols:
            t.add_column(title, justify="right", no_wrap=True)
        t.add_column("", no_wrap=True)
        for i, arm in enumerate(report.arms):
            line = sparkline(arm.curve, points, width, lo, hi)
            style = "red" if arm.diverged else ("green" if arm.remedy == report.best else "")
            name = Text(arm.remedy, style="bold" if arm.remedy == report.best else "")
            t.add_row(name, Text(line, style=style), *(cells[i] for _, cells in cols), _mark(report, arm))
        return t

    def others(cols: list[tuple[str, list[Text]]]) -> int:  # what every column but the chart takes
        wide = Console(width=10_000, color_system=None)
        natural = Measurement.get(wide, wide.options, table(MIN_CHART, cols)).maximum
        return natural - MIN_CHART

    # Narrow consoles: the losses go before the chart does (with classes, the accuracy says more than the loss).
    while len(columns) > 1 and console_width - others(columns) < MIN_CHART:
        columns = columns[1:]
    width = chart_width(console_width - others(columns) + CHART_MARGIN, points)
    if width >= points:
        unit = "one step" if points == report.steps else f"{report.steps / points:g} steps"
        scale = f"{unit} = {fmt.plural(width // points, 'column')}"
    else:
        scale = f"one column ≈ {report.steps / width:.3g} steps"
    mean = "means over the seeds; " if several else ""
    legend = Text(
        f"{mean}shared linear scale: {LEVELS[0]} {_g(lo)} … {LEVELS[-1]} {_g(hi)}; {scale}"
        + (f"; {DIVERGED_MARK} diverged (non-finite loss)" if any(a.diverged for a in report.arms) else ""),
        style="dim",
    )
    return Group(table(width, columns), legend)


def _mark(report: TrialReport, arm: Arm) -> Text:
    if arm.diverged:
        if len(arm.runs) > 1:
            return Text(f"diverged on {arm.diverged}/{len(arm.runs)} seeds", style="bold red")
        return Text(f"diverged at step {arm.runs[0].steps_run}", style="bold red")
    if arm.remedy == report.best:
        return Text("★ best, helps", style="bold green") if report.helps else Text("★ best", style="bold")
    if arm.remedy == "none":
        return Text("untreated", style="dim")
    return Text("")


def _verdict(report: TrialReport) -> Text:
    text = Text()
    none = report.untreated
    if report.best is None:
        if len(report.arms) == 1:
            text.append("Only the untreated model was trained.", style="bold")
        else:
            text.append("No remedy finished: every treated run diverged.", style="bold red")
        return text
    best = report.arm(report.best)
    classes = report.data.task.value == "classification"
    text.append("Best: ", style="bold")
    text.append(best.remedy, style="bold")
    if none.diverged == len(none.runs):
        text.append(" — the untreated model diverged and this did not")
    elif classes and best.accuracy is not None:
        ours, theirs = best.accuracy.mean, none.accuracy.mean if none.accuracy else 0.0
        text.append(
            f" — held-out accuracy {_acc_text(ours)} vs {_acc_text(theirs)} untreated ({fmt.signed(ours - theirs, 3)})"
        )
    elif best.test_loss is not None and none.test_loss is not None:
        ours, theirs = best.test_loss.mean, none.test_loss.mean
        text.append(f" — held-out loss {_g(ours)} vs {_g(theirs)} untreated")
        if theirs:
            text.append(f" ({fmt.signed(100 * (ours / theirs - 1), 0)} %)")
    if report.helps:
        text.append(". It helps", style="bold green")
    else:
        text.append(". It does not clearly help", style="bold yellow")
    text.append(f" (margin: {report.margin}).")
    if report.caveat:
        text.append(f"\nBut {report.caveat}.", style="yellow")
    return text


def _remedies(report: TrialReport) -> RenderableType | None:
    treated = report.arms[1:]
    if not treated and not report.not_trained:
        return None
    grid = Table.grid(padding=(0, 2), pad_edge=False)
    grid.add_column(no_wrap=True)
    grid.add_column()
    for arm in treated:
        body = Text()
        for i, s in enumerate(arm.applied):
            if i:
                body.append("\n")
            body.append(fmt.suggestion_target(s))
            short = _short_params(s.params)
            if short:
                body.append(f"  ({fmt.mapping(short)})", style="dim")
        for s, why in arm.skipped:
            if body:
                body.append("\n")
            body.append(f"skipped {s.remedy.value}: {why}", style="yellow")
        grid.add_row(Text(arm.remedy, style="bold"), body)
    for name, why in report.not_trained:
        grid.add_row(Text(name, style="bold dim"), Text(f"not trained: {why}", style="yellow"))
    return Group(Text("What each run changed", style="bold"), Padding(grid, (0, 0, 0, 2)))


def _short_params(params: Any) -> dict[str, Any]:
    # Per-layer maps (rescale gains, mixed norms) and parameter lists are long and already said by the target.
    return {k: v for k, v in dict(params).items() if not isinstance(v, (dict, list, tuple))}


def _loss(value: float | None) -> Text:
    return Text(_g(value), style="dim" if value is None else "")


def _acc(arm: Arm, several: bool) -> Text:
    stat = arm.accuracy
    if stat is None:
        return Text(fmt.DASH, style="dim")
    if not several:
        return Text(_acc_text(stat.mean))
    return Text(f"{stat.mean:.3f} ({stat.min:.2f}–{stat.max:.2f})")


def _acc_text(value: float | None) -> str:
    return fmt.DASH if value is None else f"{value:.3f}"


def _g(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return fmt.DASH if value is None else fmt.sci(value)
    if value == 0:
        return "0"
    # "#": keep trailing zeros, so 2.30 and 2.31 line up and read as the same precision
    return f"{value:#.3g}" if 1e-3 <= abs(value) < 1e5 else fmt.sci(value)
