"""The command line: parse options, call the library once, render, decide the exit code.

Exit codes: 0 healthy · 1 findings at or above ``--fail-on`` · 2 usage, loading or probe error (one line on stderr,
no traceback unless ``--debug``). Nothing here imports torch at module level: ``--help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console

from ._version import __version__
from .errors import ConfigError, GradscopeError

if TYPE_CHECKING:  # pragma: no cover
    from .results import Report

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
_OPTIONS = {
    "probe.batches": "--batches",
    "probe.batch_size": "--batch-size",
    "probe.seed": "--seed",
    "probe.device": "--device",
}

app = typer.Typer(
    name="gradscope",
    help="Gradient-flow diagnostics for PyTorch: which layers vanish or explode, why, and what to change.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class Format(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


class FailOn(StrEnum):
    error = "error"
    warning = "warning"
    never = "never"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gradscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """gradscope: find where gradients vanish or explode in a PyTorch model, and what to change."""


@app.command()
def scan(
    target: Annotated[str, typer.Argument(help="model.py, model.py:NAME, or package.module:NAME")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings (see configs/default.yaml).")] = None,
    batches: Annotated[int | None, typer.Option("--batches", help="Probe batches (default 4).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Samples per batch (default 16).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for inputs, dropout and the probe loss.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N or auto (default).")] = None,
    model_kwargs: Annotated[
        str | None, typer.Option("--model-kwargs", help="Constructor/factory keyword args as JSON: '{\"depth\": 30}'.")
    ] = None,
    input_shape: Annotated[
        list[str] | None,
        typer.Option("--input-shape", help="Shape of one positional input, e.g. 8,3,32,32 (repeat per input)."),
    ] = None,
    input_dtype: Annotated[
        str | None, typer.Option("--input-dtype", help="float32, float16, bfloat16, float64 or int64.")
    ] = None,
    probe: Annotated[
        Path | None, typer.Option("--probe", help="A .py file with example_inputs / probe_batches / loss_fn.")
    ] = None,
    format: Annotated[Format, typer.Option("--format", help="Report format.")] = Format.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here (atomically).")] = None,
    fail_on: Annotated[FailOn, typer.Option("--fail-on", help="Lowest finding severity that exits 1.")] = FailOn.error,
    fix: Annotated[
        bool, typer.Option("--fix", help="Apply the lead suggestion per finding in memory, re-scan, show before/after.")
    ] = False,
    weights: Annotated[
        Path | None,
        typer.Option("--weights", help="A state dict (torch.save) to load into the model first; read weights_only."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Probe a model's gradient flow and report vanishing, exploding, saturated and dead layers, with fixes.

    The exit code always judges the model as given, also with --fix."""
    with _errors(debug):
        report = _scan(
            target,
            config=config,
            overrides={
                "probe.batches": batches,
                "probe.batch_size": batch_size,
                "probe.seed": seed,
                "probe.device": device,
            },
            model_kwargs=model_kwargs,
            input_shape=input_shape,
            input_dtype=input_dtype,
            probe=probe,
            fix=fix,
            weights=weights,
        )
        _emit(report, format, output)
    raise typer.Exit(exit_code(report, fail_on))


def exit_code(report: Report, fail_on: FailOn | str) -> int:
    from .results import Severity

    if FailOn(fail_on) is FailOn.never:
        return EXIT_OK
    threshold = Severity(str(fail_on)).rank
    failing = any(f.severity.rank >= threshold for f in report.findings)
    return EXIT_FINDINGS if failing else EXIT_OK


def _scan(
    target: str,
    *,
    config: Path | None,
    overrides: dict[str, Any],
    model_kwargs: str | None,
    input_shape: list[str] | None,
    input_dtype: str | None,
    probe: Path | None,
    fix: bool = False,
    weights: Path | None = None,
) -> Report:
    from .config import load_config

    settings = load_config(config)
    try:
        settings = settings.with_overrides(overrides)
    except ConfigError as exc:  # the value came from an option: name the option the user typed
        message = str(exc).removeprefix("option: ")
        for key, option in _OPTIONS.items():
            message = message.replace(f"{key}=", f"{option} ")
        raise ConfigError(message) from None
    kwargs = dict(settings.model.kwargs)
    kwargs.update(_parse_kwargs(model_kwargs))
    shapes = [_parse_shape(s) for s in input_shape] if input_shape else None
    # The model file's own prints (at import, in forward, in its hooks) go to stderr: stdout carries the report
    # only, so `--format json` stays one JSON document.
    with _progress() as tick, contextlib.redirect_stdout(sys.stderr):
        tick("importing torch")
        import torch

        from .loading import load
        from .probes import build_batches
        from .scanner import _check_model as check_model
        from .scanner import scan as run_scan
        from .scanner import verify_fix

        dev = _resolve_device(settings.probe.device, torch)
        tick(f"loading {target}")
        loaded = load(target, model_kwargs=kwargs or None, probe_file=str(probe) if probe else None)
        if weights is not None:
            from .checkpoint import load_weights

            tick(f"loading weights from {weights}")
            load_weights(loaded.module, weights)
        # Before .to(): a meta-device model fails there with torch's internal error instead of the scan's advice.
        check_model(loaded.module)
        model = loaded.module.to(dev)
        tick("building probe batches")
        p = settings.probe
        data = build_batches(
            model,
            loaded.hooks,
            n=p.batches,
            batch_size=p.batch_size,
            seed=p.seed,
            device=dev,
            input_shapes=shapes,
            input_dtype=input_dtype,
            seq_len=p.seq_len,
            image_size=p.image_size,
        )
        report = run_scan(
            model,
            data,
            loss_fn=loaded.hooks.loss_fn,
            config=settings,
            target=target,
            progress=lambda i, n: tick(f"probing batch {i}/{n}"),
        )
        if fix:
            tick("applying the suggestions and re-scanning")
            report = verify_fix(model, data, report, loss_fn=loaded.hooks.loss_fn, config=settings, target=target)
        return report


def _emit(report: Report, fmt: Format, output: Path | None) -> None:
    from .report import render_json, render_markdown, render_terminal

    if fmt is Format.json:
        deliver(output, text=render_json(report))
    elif fmt is Format.markdown:
        deliver(output, text=render_markdown(report))
    else:
        deliver(output, draw=lambda console: render_terminal(report, console))


def deliver(
    output: Path | None, *, text: str | None = None, draw: Callable[[Console], None] | None = None, what: str = "report"
) -> None:
    """Put a rendered result where the user asked: ``text`` as is, or ``draw`` (a terminal renderer) on the terminal
    — or, with ``--output``, as plain 120-column text. Files are written atomically; stdout failures are one line."""
    from .report import write_atomic

    if text is None:
        assert draw is not None
        if output is None:
            with _stdout_errors():
                draw(_stdout_console())
            return
        text = _plain_text(draw)
    if output is None:
        with _stdout_errors():
            sys.stdout.write(text)
            sys.stdout.flush()
    else:
        write_atomic(output, text)
        _stderr().print(f"{what} written to {output}", highlight=False, markup=False)


@contextmanager
def _stdout_errors() -> Iterator[None]:
    # stdout on a full disk (/dev/full) or a closed pipe: a one-line OutputError, not "internal error: OSError".
    try:
        yield
    except OSError as exc:
        from .errors import OutputError

        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"cannot write the report to stdout: {reason}") from exc


def _plain_text(draw: Callable[[Console], None]) -> str:
    import io

    buffer = io.StringIO()
    draw(Console(file=buffer, width=120, color_system=None, force_terminal=False, no_color=True))
    return buffer.getvalue()


def _stdout_console() -> Console:
    # Plain text when piped (rich's own check) or when NO_COLOR is set; a wide page when not a terminal.
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "120"))
    return Console(width=width, highlight=False, color_system=_color_system())


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, color_system=_color_system())


def _color_system() -> Literal["auto"] | None:
    # rich's NO_COLOR support drops colours but keeps bold/dim codes; no-color.org asks for plain text.
    return None if os.environ.get("NO_COLOR") else "auto"


@contextmanager
def _progress(after: float = 1.0) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr, shown only in a terminal and only once the work has taken longer than ``after`` s."""
    console = _stderr()
    started = time.monotonic()
    status: Any = None

    def tick(message: str) -> None:
        nonlocal status
        if not console.is_terminal:
            return
        if status is None and time.monotonic() - started > after:
            status = console.status(message)
            status.start()
        elif status is not None:
            status.update(message)

    try:
        yield tick
    finally:
        if status is not None:
            status.stop()


def _resolve_device(name: str, torch: Any) -> Any:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


def _parse_kwargs(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--model-kwargs is not valid JSON ({exc.msg} at column {exc.colno}): {text}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--model-kwargs must be a JSON object such as '{{\"depth\": 30}}', got {text}")
    return value


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(f"--input-shape {text!r}: expected positive integers separated by commas, e.g. 8,3,32,32")
    return shape


@contextmanager
def _errors(debug: bool) -> Iterator[None]:
    """The one place library errors become a red line and exit code 2."""
    try:
        yield
    except GradscopeError as exc:
        if debug:
            raise
        _fail(str(exc))
    except KeyboardInterrupt:
        _stderr().print("gradscope: interrupted", style="red", highlight=False)
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # a bug of ours: still one line, with the way to get the traceback
        if debug:
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")


def _fail(message: str) -> NoReturn:
    _stderr().print(f"error: {message}", style="red", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_ERROR)


def main() -> None:
    app()


from .cli_trial import register as _register_trial  # noqa: E402  (cli_trial uses the helpers above)

_register_trial(app)

from .cli_ci import register as _register_ci  # noqa: E402

_register_ci(app)

from .cli_watch import register as _register_watch  # noqa: E402

_register_watch(app)
