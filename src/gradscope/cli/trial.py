"""``gradscope trial``: train the model untreated and with each candidate remedy, and say which one helps.

Exit 0 when the trial ran (whatever it found), 2 on bad input with one line on stderr.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import ConfigError
from ..vocab import Format, Optimizer
from . import common
from .common import (
    ConfigOpt,
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    FormatOpt,
    HtmlOpt,
    KwargsOpt,
    OutputOpt,
    ProbeOpt,
    SeedOpt,
    ShapeOpt,
    TargetArg,
    WeightsOpt,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..trial import TrialReport

REMEDY_HELP = (
    "auto (the scan's remedies plus the classic ones its evidence allows), none, all (every remedy, at a fixed "
    "placement where the scan measured none; the ones that cannot apply are named), or one of pseudo-norm, rescale, "
    "regularize, activation, normalization, init, clip, residual, gated-recurrent (comma-separate several)."
)
FORMATS = (Format.TABLE, Format.JSON)


def trial(
    target: TargetArg,
    remedy: Annotated[str, typer.Option("--remedy", help=REMEDY_HELP)] = "auto",
    steps: Annotated[int | None, typer.Option("--steps", help="Training steps per run (default 300).")] = None,
    seeds: Annotated[
        int | None,
        typer.Option(
            "--seeds",
            help="Seeds per remedy (default 3): each builds the model again and draws its own minibatch order; "
            "the table shows the mean and min–max.",
        ),
    ] = None,
    optimizer: Annotated[
        Optimizer | None, typer.Option("--optimizer", help="The optimizer to train with (default adam).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", help="Learning rate (default 0.1 for sgd, 1e-3 for adam).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Training minibatch size (default 64).")
    ] = None,
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    model_kwargs: KwargsOpt = None,
    input_shape: ShapeOpt = None,
    input_dtype: DtypeOpt = None,
    probe: ProbeOpt = None,
    weights: WeightsOpt = None,
    format: FormatOpt = Format.TABLE,
    output: OutputOpt = None,
    html: HtmlOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Train copies of the model from one init, untreated and with each remedy; compare held-out results."""
    with common.errors(debug):
        common.supported(format, FORMATS, "trial")
        common.ensure_writable(output, "--output")
        common.ensure_writable(html, "--html")
        if steps is not None and steps < 1:
            raise ConfigError(f"--steps {steps}: must be at least 1")
        if seeds is not None and seeds < 1:
            raise ConfigError(f"--seeds {seeds}: must be at least 1")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"--batch-size {batch_size}: must be at least 1")
        if lr is not None and not (lr > 0 and lr != float("inf")):
            raise ConfigError(f"--lr {lr}: must be a finite number > 0")
        settings, spec = common.model_options(
            target,
            config=config,
            model_kwargs=model_kwargs,
            weights=weights,
            input_shape=input_shape,
            input_dtype=input_dtype,
            probe=probe,
            seed=seed,
            device=device,
        )
        from ..pipeline import trial_target, user_code_output
        from ..trial import parse_remedies

        remedies = parse_remedies(remedy)
        with common.progress() as tick, _training_bar() as bar, user_code_output():
            report = trial_target(
                spec,
                settings,
                remedies=remedies,
                steps=steps,
                seeds=seeds,
                optimizer=optimizer.value if optimizer else None,
                lr=lr,
                batch_size=batch_size,
                progress=tick,
                training_progress=bar,
            )
        page = _html_page(report) if html is not None else None  # rendered first: a renderer bug writes nothing
        _emit(report, format, output)
        if html is not None and page is not None:
            common.write_files([(html, page)])
    raise typer.Exit(common.EXIT_OK)


@contextmanager
def _training_bar() -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress bar on stderr over all runs' steps; nothing at all when stderr is not a terminal."""
    console = common.stderr_console()
    if not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("training {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task: Any = None

    def update(remedy: str, done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = bar.add_task(remedy, total=total)
        bar.update(task, completed=done, description=remedy)

    with bar:
        yield update


def _emit(report: TrialReport, fmt: Format, output: Path | None) -> None:
    from ..report.trial import render_trial_json, render_trial_terminal

    if fmt is Format.JSON:
        common.deliver(output, text=render_trial_json(report))
    else:
        common.deliver(output, draw=lambda console: render_trial_terminal(report, console))


def _html_page(report: TrialReport) -> str:
    from ..report.html_trial import render_trial_html

    return render_trial_html(report)
