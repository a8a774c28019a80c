"""What every command shares: the options that load a model (declared once), settings with errors named by the
option the user typed, errors → exit codes, where output goes, consoles and progress.

Nothing here imports torch at module level: ``--help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from typer.core import TyperCommand

from ..errors import ConfigError, GradscopeError, OutputError
from ..util import clean
from ..vocab import FailOn, Format, Optimizer

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config
    from ..pipeline import TargetSpec
    from ..results import Report

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2

# -- help ------------------------------------------------------------------------------------------------------

_TYPE_LABEL = re.compile(r" <([^<>]*)>$")
_VALUE_NAMES = {"path": "PATH", "int": "N", "float": "NUMBER", "str": "TEXT", "list[str]": "TEXT"}


class Command(TyperCommand):
    """Every command's help in click's plain conventions, whatever typer's own would be: ``TARGET`` rather than
    ``{TARGET}`` in the usage line, no ``<str>`` after an argument, ``--batches N`` rather than ``<int>``, choices
    as ``[sgd|adam]``. (Typer bundles its own click: parameters are told apart by ``param_type_name``.)"""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_arg_name(p) for p in self.get_params(ctx) if p.param_type_name == "argument"]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        params = self.get_params(ctx)
        args = [(_arg_name(p), getattr(p, "help", None) or "") for p in params if p.param_type_name == "argument"]
        opts = []
        for param in params:
            record = param.get_help_record(ctx) if param.param_type_name == "option" else None
            if record is not None:
                opts.append((_TYPE_LABEL.sub(lambda m: " " + _value_name(m.group(1)), record[0]), record[1]))
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)


def _arg_name(param: Any) -> str:
    return str(param.metavar or (param.name or "ARG").upper())


def _value_name(label: str) -> str:
    return _VALUE_NAMES.get(label) or (f"[{label}]" if "|" in label else label.upper())


# -- options shared by the commands, declared once -------------------------------------------------------------

TargetArg = Annotated[str, typer.Argument(metavar="TARGET", help="model.py, model.py:NAME, or package.module:NAME")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML settings (see configs/default.yaml; check: configs/ci.yaml).")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed for the model's init, inputs, dropout and loss.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N or auto (default).")]
KwargsOpt = Annotated[
    str | None, typer.Option("--model-kwargs", help="Constructor/factory keyword args as JSON: '{\"depth\": 30}'.")
]
ShapeOpt = Annotated[
    list[str] | None,
    typer.Option("--input-shape", metavar="SHAPE", help="One positional input's shape, e.g. 8,3,32,32 (repeatable)."),
]
DtypeOpt = Annotated[str | None, typer.Option("--input-dtype", help="float32, float16, bfloat16, float64 or int64.")]
ProbeOpt = Annotated[
    Path | None, typer.Option("--probe", help="A .py file with example_inputs / probe_batches / loss_fn / dataset.")
]
WeightsOpt = Annotated[
    Path | None, typer.Option("--weights", help="A state dict (torch.save) to load into the model first.")
]
OptimizerOpt = Annotated[
    Optimizer | None,
    typer.Option(
        "--optimizer",
        help="The optimizer you train with (default adam): a gradient that only shrinks on its way back is an error "
        "for sgd, a warning for adam until it nears Adam's epsilon.",
    ),
]
BatchesOpt = Annotated[int | None, typer.Option("--batches", help="Probe batches (default 4).")]
BatchSizeOpt = Annotated[int | None, typer.Option("--batch-size", help="Samples per probe batch (default 16).")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here (atomically).")]
FailOnOpt = Annotated[FailOn | None, typer.Option("--fail-on", help="Lowest finding severity that exits 1.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]
FormatOpt = Annotated[Format, typer.Option("--format", help="Report format.")]
HtmlOpt = Annotated[
    Path | None,
    typer.Option("--html", help="Also write a self-contained HTML report with charts here (atomically)."),
]


def settings(config: Path | None, overrides: dict[str, Any]) -> Config:
    """Defaults, then the ``--config`` file, then the options given (``None``: not given). A bad option value is
    named as the user typed it (``--batches 0``), not as the config key."""
    from ..config import OPTION_KEYS, OPTION_SOURCE, load_config

    loaded = load_config(config)
    try:
        return loaded.with_overrides(overrides)
    except ConfigError as exc:
        message = str(exc).removeprefix(f"{OPTION_SOURCE}: ")
        for key, option in OPTION_KEYS.items():
            message = message.replace(f"{key}=", f"{option} ")
        raise ConfigError(message) from None


def model_options(
    target: str,
    *,
    config: Path | None,
    model_kwargs: str | None,
    weights: Path | None,
    input_shape: list[str] | None,
    input_dtype: str | None,
    probe: Path | None,
    seed: int | None,
    device: str | None,
    batches: int | None = None,
    batch_size: int | None = None,
    optimizer: Optimizer | None = None,
) -> tuple[Config, TargetSpec]:
    """The settings and the target spec from the options every model-loading command shares."""
    from ..pipeline import TargetSpec

    overrides = {
        "probe.batches": batches,
        "probe.batch_size": batch_size,
        "probe.seed": seed,
        "probe.device": device,
        "diagnose.optimizer": optimizer.value if optimizer is not None else None,
    }
    spec = TargetSpec(
        target=target,
        model_kwargs=parse_kwargs(model_kwargs),
        weights=weights,
        probe_file=probe,
        input_shapes=tuple(parse_shape(s) for s in input_shape) if input_shape else None,
        input_dtype=input_dtype,
    )
    return settings(config, overrides), spec


def parse_kwargs(text: str | None) -> dict[str, Any]:
    from ..config import MAX_NESTING, check_nesting

    if not text:
        return {}
    shown = text if len(text) <= 80 else text[:77] + "..."
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--model-kwargs is not valid JSON ({exc.msg} at column {exc.colno}): {shown}") from None
    except RecursionError:  # the decoder recurses per level: thousands of levels exhaust the stack
        raise ConfigError(f"--model-kwargs is nested more than {MAX_NESTING} levels deep") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--model-kwargs must be a JSON object such as '{{\"depth\": 30}}', got {shown}")
    check_nesting(value, "--model-kwargs")
    return value


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(f"--input-shape {text!r}: expected positive integers separated by commas, e.g. 8,3,32,32")
    return shape


def ensure_writable(path: Path | None, option: str) -> None:
    """Fail early, with the option's name, when ``path`` cannot be written (the work would be wasted)."""
    if path is None or str(path).startswith(("/dev/", "/proc/")):
        return
    parent = path.parent if str(path.parent) else Path(".")
    reason = None
    if path.is_dir():
        reason = "is a directory, cannot write a report there; give a file name"
    elif not parent.exists():
        reason = f"directory {parent} does not exist; create it first"
    elif not parent.is_dir():
        reason = f"cannot write it: {parent} is not a directory"
    elif not os.access(parent, os.W_OK | os.X_OK):
        reason = f"cannot write it: directory {parent} is not writable"
    if reason is not None:
        raise ConfigError(f"{option} {path}: {reason}")


def supported(fmt: Format, allowed: tuple[Format, ...], command: str) -> None:
    if fmt not in allowed:
        names = ", ".join(f.value for f in allowed)
        raise ConfigError(f"--format {fmt.value}: gradscope {command} writes {names}")


def exit_code(report: Report, fail_on: FailOn | str | None) -> int:
    """1 when a finding is at or above ``fail_on`` (default ``error``), else 0."""
    threshold = FailOn(fail_on or FailOn.ERROR)
    return EXIT_FINDINGS if any(threshold.fails(f.severity) for f in report.findings) else EXIT_OK


# -- errors ----------------------------------------------------------------------------------------------------


@contextmanager
def errors(debug: bool) -> Iterator[None]:
    """The one place library errors become a red line and exit code 2."""
    try:
        yield
    except GradscopeError as exc:
        if debug:
            raise
        fail(str(exc))
    except KeyboardInterrupt:
        stderr_console().print("gradscope: interrupted", style="red", highlight=False)
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # a bug of ours: still one line, with the way to get the traceback
        if debug:
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")


def fail(message: str) -> NoReturn:
    # clean(): a layer name or an exception text with a newline or ESC in it keeps the error one plain line.
    stderr_console().print(f"error: {clean(message)}", style="red", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_ERROR)


# -- output ----------------------------------------------------------------------------------------------------


def deliver(
    output: Path | None,
    *,
    text: str | None = None,
    draw: Callable[[Console], None] | None = None,
    what: str = "report",
) -> None:
    """Put a rendered result where the user asked: ``text`` as is, or ``draw`` (a terminal renderer) on the terminal
    — or, with ``--output``, as plain text. Files are written atomically; stdout failures are one line."""
    from ..report import write_atomic

    if text is None:
        assert draw is not None
        if output is None:
            with _stdout_errors():
                sys.stdout.write(_drawn(stdout_console(), draw))
                sys.stdout.flush()
            return
        text = plain_text(draw)
    if output is None:
        with _stdout_errors():
            sys.stdout.write(text)
            sys.stdout.flush()
    else:
        write_atomic(output, text)
        stderr_console().print(f"{what} written to {output}", highlight=False, markup=False)


def write_files(texts: list[tuple[Path, str]]) -> None:
    """Write several rendered files (each atomically), then name them on stderr."""
    from ..report import write_atomic

    for path, text in texts:
        write_atomic(path, text)
    if texts:
        stderr_console().print(f"written: {', '.join(str(p) for p, _ in texts)}", highlight=False, markup=False)


@contextmanager
def _stdout_errors() -> Iterator[None]:
    # stdout on a full disk (/dev/full) or a closed pipe: a one-line OutputError, not "internal error: OSError".
    try:
        yield
    except OSError as exc:
        _discard_stdout()
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"cannot write the report to stdout: {reason}") from exc


def stdout_lost(exc: OSError) -> NoReturn:
    """Writing to stdout failed outside a command's own output (click printing ``--help``): one line, exit 2."""
    _discard_stdout()
    print(f"error: cannot write to stdout: {exc.strerror or type(exc).__name__}", file=sys.stderr)
    raise SystemExit(EXIT_ERROR)


def _discard_stdout() -> None:
    """Point fd 1 at /dev/null: what is left in Python's stdout buffer is flushed again at exit, and a second
    failure there would print an "Exception ignored" traceback after the one-line error."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    except OSError:
        pass


def plain_text(draw: Callable[[Console], None]) -> str:
    """What ``draw`` prints, as plain text for a file: the width of a pipe, no trailing blanks."""
    from ..report.terminal import render_text

    return render_text(draw)


def _drawn(console: Console, draw: Callable[[Console], None]) -> str:
    # Captured, then written: the lines lose rich's padding (trailing blanks) on a terminal and in a pipe alike.
    from ..report.terminal import strip_trailing

    with console.capture() as capture:
        draw(console)
    return strip_trailing(capture.get())


def stdout_console() -> Console:
    # Plain text when piped (rich's own check) or when NO_COLOR is set; the width of a pipe when not a terminal.
    from ..report.terminal import text_width

    width = None if sys.stdout.isatty() else text_width()
    return Console(width=width, highlight=False, color_system=_color_system())


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, color_system=_color_system())


def _color_system() -> Literal["auto"] | None:
    # rich's NO_COLOR support drops colours but keeps bold/dim codes; no-color.org asks for plain text.
    return None if os.environ.get("NO_COLOR") else "auto"


# Not in a terminal (a CI log), a slow run says where it is at most once per this many seconds, and only after it.
HEARTBEAT_S = 30.0


@contextmanager
def progress(after: float = 1.0) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr, shown only in a terminal and only once the work has taken longer than ``after`` s.
    Elsewhere a run that takes longer than ``HEARTBEAT_S`` prints one plain line per such interval, at the next
    step it reaches (``gradscope: probing batch 2/4 (41 s)``), so a CI log is not silent for minutes."""
    console = stderr_console()
    started = time.monotonic()
    last_line = started
    status: Any = None

    def tick(message: str) -> None:
        nonlocal status, last_line
        if not console.is_terminal:
            now = time.monotonic()
            if now - last_line >= HEARTBEAT_S:
                console.print(f"gradscope: {clean(message)} ({now - started:.0f} s)", markup=False, soft_wrap=True)
                last_line = now
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
