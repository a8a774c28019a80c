"""The command line: each command parses options, calls one library function (``gradscope.pipeline``), renders,
and decides the exit code. The shared options and helpers are in ``common``.

Exit codes: 0 healthy · 1 findings at or above ``--fail-on`` · 2 usage, loading or probe error (one line on stderr,
no traceback unless ``--debug``). Nothing here imports torch at module level: ``--help`` and ``--version`` stay fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .._version import __version__
from . import ci, common
from .report import report
from .scan import scan
from .trial import trial

app = typer.Typer(
    name="gradscope",
    help="Gradient-flow diagnostics for PyTorch: which layers vanish or explode, why, and what to change.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        with common.errors(debug=False):  # `--version > /dev/full`: one line, not a traceback
            common.deliver(None, text=f"gradscope {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """gradscope: find where gradients vanish or explode in a PyTorch model, and what to change."""


app.command(name="scan", cls=common.Command)(scan)
app.command(name="trial", cls=common.Command)(trial)
app.command(name="check", cls=common.Command)(ci.check)
app.command(name="baseline", cls=common.Command)(ci.baseline)
app.command(name="diff", cls=common.Command)(ci.diff)
app.command(name="report", cls=common.Command)(report)


def main() -> None:
    try:
        app(prog_name="gradscope")  # also under `python -m gradscope`: completion and usage say gradscope
    except OSError as exc:  # `--help > /dev/full`: click writes the help itself; one line, not a traceback
        common.stdout_lost(exc)


__all__ = ["app", "main"]
