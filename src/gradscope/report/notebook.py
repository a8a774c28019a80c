"""Results shown in Jupyter (the HTML report's body, styled and scoped) and in rich (the terminal report as a
renderable that fits the console it is printed on). ``gradscope.display`` calls ``show`` on first use."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console, ConsoleOptions, RenderResult

    from ..results import Report
    from ..trial import TrialReport
    from ..watching.timeline import Timeline


def show(kind: str, result: object) -> Any:
    """``kind`` "html": the HTML fragment of ``result`` (a Report, TrialReport or Timeline); "rich": a renderable."""
    what = _kind_of(result)
    if kind == "html":
        if what == "report":
            from .html import report_fragment

            return report_fragment(cast("Report", result))
        if what == "trial":
            from .html_trial import trial_fragment

            return trial_fragment(cast("TrialReport", result))
        if what == "timeline":
            from .html_timeline import timeline_fragment

            return timeline_fragment(cast("Timeline", result))
    elif kind == "rich" and what is not None:
        return Drawn(lambda console: _draw(what, result, console))
    raise TypeError(f"gradscope cannot show a {type(result).__name__} as {kind}")


def _kind_of(result: object) -> str | None:
    """Which result this is. A TrialReport or Timeline exists only once its module is loaded: looked up there,
    so showing a Report never imports the trial or watch packages (and torch with them)."""
    for name, module, cls in (
        ("report", "gradscope.results", "Report"),
        ("trial", "gradscope.trial.results", "TrialReport"),
        ("timeline", "gradscope.watching.timeline", "Timeline"),
    ):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(result, getattr(loaded, cls)):
            return name
    return None


def _draw(what: str, result: object, console: Console) -> None:
    if what == "report":
        from .terminal import render_terminal

        render_terminal(cast("Report", result), console)
    elif what == "trial":
        from .trial import render_trial_terminal

        render_trial_terminal(cast("TrialReport", result), console)
    else:
        from .timeline import render_timeline_terminal

        render_timeline_terminal(cast("Timeline", result), console)


class Drawn:
    """A renderer that prints onto a console, as a renderable: drawn on a console like the one it is rendered
    on (its width and colours), the styled text handed back to that console."""

    def __init__(self, draw: Callable[[Console], None]) -> None:
        self.draw = draw

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self._lines(console, options.max_width)

    def _lines(self, console: Console, width: int) -> Iterator[Any]:
        from rich.console import Console
        from rich.text import Text

        buffer = io.StringIO()
        colors = console.color_system
        inner = Console(
            file=buffer,
            width=width,
            color_system=colors,  # type: ignore[arg-type]
            force_terminal=colors is not None,
            no_color=console.no_color,
            highlight=False,
            legacy_windows=False,
        )
        self.draw(inner)
        yield Text.from_ansi(buffer.getvalue().rstrip("\n"), no_wrap=True, overflow="ignore")
