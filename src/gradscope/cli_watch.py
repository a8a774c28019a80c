"""``gradscope report RUN.jsonl``: the timeline of a run recorded by ``gradscope.watch``.

Registered on the main Typer app by ``register(app)``. Exit codes as ``scan``: 0 healthy, 1 findings at or above
``--fail-on`` in the report of the last ``--window`` recorded steps, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import io
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .errors import ConfigError


class TimelineFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"
    html = "html"


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to ``app`` (once)."""
    if any(c.name == "report" for c in app.registered_commands):
        return
    app.command(name="report")(report)


def report(
    log: Annotated[Path, typer.Argument(help="A JSONL log written by gradscope.watch(..., log=PATH).")],
    format: Annotated[TimelineFormat, typer.Option("--format", help="table, json, markdown or html.")] = (
        TimelineFormat.table
    ),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (atomically).")] = None,
    window: Annotated[
        int | None, typer.Option("--window", help="Recorded steps the report's medians cover (default: the run's).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings (diagnose thresholds).")] = None,
    fail_on: Annotated[str, typer.Option("--fail-on", help="error (default), warning or never.")] = "error",
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Heatmap of each layer over the recorded steps, the first step each went bad, and scan's findings."""
    from .cli import FailOn, _errors, _stderr, _stdout_console, exit_code

    with _errors(debug):
        if fail_on not in {f.value for f in FailOn}:
            raise ConfigError(f"--fail-on {fail_on}: must be error, warning or never")
        if window is not None and window < 1:
            raise ConfigError(f"--window {window}: must be at least 1")
        timeline = build_timeline(log, window=window, config=config)
        from .report import write_atomic
        from .report.timeline import (
            render_timeline_html,
            render_timeline_json,
            render_timeline_markdown,
            render_timeline_terminal,
        )

        if format is TimelineFormat.json:
            text = render_timeline_json(timeline)
        elif format is TimelineFormat.markdown:
            text = render_timeline_markdown(timeline)
        elif format is TimelineFormat.html:
            text = render_timeline_html(timeline)
        elif output is not None:
            buffer = io.StringIO()
            render_timeline_terminal(
                timeline, Console(file=buffer, width=120, color_system=None, force_terminal=False, no_color=True)
            )
            text = buffer.getvalue()
        else:
            render_timeline_terminal(timeline, _stdout_console())
            text = None
        if text is not None:
            if output is None:
                sys.stdout.write(text)
                sys.stdout.flush()
            else:
                write_atomic(output, text)
                _stderr().print(f"report written to {output}", highlight=False)
        code = exit_code(timeline.report, fail_on)
    raise typer.Exit(code)


def build_timeline(log: Path, *, window: int | None = None, config: Path | None = None):  # type: ignore[no-untyped-def]
    from .config import load_config
    from .report.timeline import Timeline
    from .timeline import DEFAULT_WINDOW, build_report, first_events, read_log

    settings = load_config(config) if config is not None else None
    run = read_log(log)
    size = window or int(run.meta.get("window") or DEFAULT_WINDOW)
    rep = build_report(run, window=size, config=settings)
    return Timeline.of(run, rep, first_events(run, settings))
