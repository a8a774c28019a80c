"""``gradscope trial``: train the model untreated and with each candidate remedy, and say which one helps.

Registered on the main Typer app by ``register(app)`` (cli.py calls it; the helpers this module takes from
cli.py are imported inside the functions, so either module may be imported first). Like ``scan``: parse
options → library calls (load, plan, run_trial) → renderer → exit code. Exit 0 when the trial ran (whatever it
found), 2 on bad input with one line on stderr. Torch is imported only inside the command, so ``--help`` stays
fast.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .trial import TrialReport

REMEDY_HELP = (
    "auto (the scan's remedies plus the classic ones its evidence allows), none, all, or one of "
    "pseudo-norm, rescale, regularize, activation, normalization, init, clip "
    "(comma-separate several)."
)


class TrialFormat(StrEnum):
    table = "table"
    json = "json"


class OptimizerName(StrEnum):
    sgd = "sgd"
    adam = "adam"


def register(app: typer.Typer) -> None:
    """Add the ``trial`` command to ``app`` (once)."""
    if any(c.name == "trial" for c in app.registered_commands):
        return
    app.command(name="trial")(trial)


def trial(
    target: Annotated[str, typer.Argument(help="model.py, model.py:NAME, or package.module:NAME")],
    remedy: Annotated[str, typer.Option("--remedy", help=REMEDY_HELP)] = "auto",
    steps: Annotated[int, typer.Option("--steps", help="Training steps per run (default 300).")] = 300,
    optimizer: Annotated[
        OptimizerName, typer.Option("--optimizer", help="sgd (default lr 0.1) or adam (default lr 1e-3).")
    ] = OptimizerName.adam,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default: sgd 0.1, adam 1e-3).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the split, the minibatches, the init and dropout.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training minibatch size (default 64).")] = 64,
    model_kwargs: Annotated[
        str | None,
        typer.Option("--model-kwargs", help="Constructor/factory keyword args as JSON: '{\"depth\": 30}'."),
    ] = None,
    probe: Annotated[
        Path | None, typer.Option("--probe", help="A .py file with dataset(), example_inputs, probe_batches.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto (default).")] = "auto",
    format: Annotated[TrialFormat, typer.Option("--format", help="Report format.")] = TrialFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here (atomically).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Train copies of the model from one init, untreated and with each remedy; compare held-out results."""
    from .cli import EXIT_OK, _errors

    with _errors(debug):
        report = _trial(
            target,
            remedy=remedy,
            steps=steps,
            optimizer=optimizer.value,
            lr=lr,
            seed=seed,
            batch_size=batch_size,
            model_kwargs=model_kwargs,
            probe=probe,
            device=device,
        )
        _emit(report, format, output)
    raise typer.Exit(EXIT_OK)


def _trial(
    target: str,
    *,
    remedy: str,
    steps: int,
    optimizer: str,
    lr: float | None,
    seed: int,
    batch_size: int,
    model_kwargs: str | None,
    probe: Path | None,
    device: str,
) -> TrialReport:
    from .cli import _parse_kwargs, _progress, _resolve_device
    from .trial import parse_remedies

    # Everything that needs no model is checked before torch is imported: a typo fails in milliseconds.
    remedies = parse_remedies(remedy)
    if steps < 1:
        raise ConfigError(f"--steps {steps}: must be at least 1")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be at least 1")
    if lr is not None and not (lr > 0 and lr != float("inf")):
        raise ConfigError(f"--lr {lr}: must be a finite number > 0")
    kwargs = _parse_kwargs(model_kwargs)
    # As in scan: the model file's prints go to stderr, stdout carries only the trial report.
    with _progress() as tick, contextlib.redirect_stdout(sys.stderr):
        tick("importing torch")
        import torch

        from .loading import load
        from .trial import dataset_from, plan

        dev = _resolve_device(device, torch)
        tick(f"loading {target}")
        loaded = load(target, model_kwargs=kwargs or None, probe_file=str(probe) if probe else None)
        model = loaded.module.to(dev)
        tick("reading dataset()")
        data = dataset_from(loaded.hooks)
        tick("scanning")
        chosen = plan(
            model,
            loaded.hooks,
            remedies,
            seed=seed,
            target=target,
            progress=lambda i, n: tick(f"scanning: probe batch {i}/{n}"),
        )
    from .trial import run_trial

    with _training_bar() as progress, contextlib.redirect_stdout(sys.stderr):
        return run_trial(
            model,
            data=data,
            candidates=chosen.selected,
            steps=steps,
            optimizer=optimizer,
            lr=lr,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
            hooks=loaded.hooks,
            target=target,
            note=chosen.note,
        )


@contextmanager
def _training_bar() -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress bar on stderr over all runs' steps; nothing at all when stderr is not a terminal."""
    from .cli import _stderr

    console = _stderr()
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


def _emit(report: TrialReport, fmt: TrialFormat, output: Path | None) -> None:
    from .cli import deliver
    from .report.trial import render_trial_json, render_trial_terminal

    if fmt is TrialFormat.json:
        deliver(output, text=render_trial_json(report))
    else:
        deliver(output, draw=lambda console: render_trial_terminal(report, console))
