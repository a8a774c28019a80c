"""``gradscope report RUN.jsonl``: the timeline of a run recorded by ``gradscope.watch``.

Exit codes as ``scan``: 0 healthy, 1 findings at or above ``--fail-on`` in the report of the last ``--window``
recorded steps, 2 bad input (one line on stderr): a missing or unreadable log, no recorded step, every step
skipped, no layer measured in the window, a malformed meta line, stdout that cannot be written. The log is read in
one pass (``watching.timeline.read_timeline``): memory independent of its length, time linear in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ..vocab import Format
from . import common
from .common import ConfigOpt, DebugOpt, FailOnOpt, FormatOpt, HtmlOpt, OutputOpt


def report(
    log: Annotated[Path, typer.Argument(metavar="RUN.jsonl", help="A log written by gradscope.watch(..., log=PATH).")],
    format: FormatOpt = Format.TABLE,
    output: OutputOpt = None,
    html: HtmlOpt = None,
    window: Annotated[
        int | None, typer.Option("--window", help="Recorded steps the report's medians cover (default: the run's).")
    ] = None,
    config: ConfigOpt = None,
    fail_on: FailOnOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Heatmap of each layer over the recorded steps, the first step each went bad, and scan's findings."""
    with common.errors(debug):
        common.ensure_writable(output, "--output")
        common.ensure_writable(html, "--html")
        if window is not None and window < 1:
            raise ConfigError(f"--window {window}: must be at least 1")
        settings = common.settings(config, {})
        from ..pipeline import timeline_of
        from ..report.html_timeline import render_timeline_html
        from ..report.timeline import (
            render_timeline_json,
            render_timeline_markdown,
            render_timeline_terminal,
        )

        timeline = timeline_of(log, window=window, config=settings)
        page = render_timeline_html(timeline) if html is not None else None  # first: a renderer bug writes nothing
        if format is Format.JSON:
            common.deliver(output, text=render_timeline_json(timeline))
        elif format is Format.MARKDOWN:
            common.deliver(output, text=render_timeline_markdown(timeline))
        elif format is Format.HTML:
            common.deliver(output, text=render_timeline_html(timeline))
        else:
            common.deliver(output, draw=lambda console: render_timeline_terminal(timeline, console))
        if html is not None and page is not None:
            common.write_files([(html, page)])
        code = common.exit_code(timeline.report, fail_on)
    raise typer.Exit(code)
