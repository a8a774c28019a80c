"""``gradscope check``, ``baseline`` and ``diff``: gradient health as a CI gate.

Registered on the main Typer app by ``register(app)``. Like ``scan``: parse options → library calls (scan,
policy.evaluate, baseline.compare) → renderers → exit code. Exit codes (design.md): **0** the check passes / no
regression, **1** failing checks or regressions, **2** bad input (a config, a baseline that is not a usable report,
an output path that cannot be written): one line on stderr, no traceback unless ``--debug``.

Output paths are checked before the model is loaded, so a typo in ``--junit`` costs no scan; every file is written
atomically (never half-written). Torch is imported only inside the commands: ``--help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, _errors, _scan, _stderr, _stdout_console, deliver
from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .results import Report

TARGET_HELP = "model.py, model.py:NAME, or package.module:NAME"


class CheckFailOn(StrEnum):
    error = "error"
    warning = "warning"
    info = "info"
    never = "never"


class DiffFormat(StrEnum):
    table = "table"
    markdown = "markdown"
    json = "json"
    html = "html"


def register(app: typer.Typer) -> None:
    """Add ``check``, ``baseline`` and ``diff`` to ``app`` (once)."""
    names = {c.name for c in app.registered_commands}
    for name, command in (("check", check), ("baseline", baseline), ("diff", diff)):
        if name not in names:
            app.command(name=name)(command)


# Options shared with `scan`, spelled the same way.
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML settings and policy (see configs/ci.yaml).")]
BatchesOpt = Annotated[int | None, typer.Option("--batches", help="Probe batches (default 4, or the baseline's).")]
BatchSizeOpt = Annotated[
    int | None, typer.Option("--batch-size", help="Samples per batch (default 16, or the baseline's).")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed for inputs, dropout and the probe loss.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N or auto (default).")]
KwargsOpt = Annotated[
    str | None, typer.Option("--model-kwargs", help="Constructor/factory keyword args as JSON: '{\"depth\": 30}'.")
]
ShapeOpt = Annotated[
    list[str] | None,
    typer.Option("--input-shape", help="Shape of one positional input, e.g. 8,3,32,32 (repeat per input)."),
]
DtypeOpt = Annotated[str | None, typer.Option("--input-dtype", help="float32, float16, bfloat16, float64 or int64.")]
ProbeOpt = Annotated[
    Path | None, typer.Option("--probe", help="A .py file with example_inputs / probe_batches / loss_fn.")
]
FactorOpt = Annotated[
    float | None,
    typer.Option(
        "--factor",
        help="A layer whose signal or grad RMS moves by more than this is a regression "
        "(default: policy.baseline_factor, 10).",
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]


def check(
    target: Annotated[str, typer.Argument(help=TARGET_HELP)],
    config: ConfigOpt = None,
    baseline_file: Annotated[
        Path | None,
        typer.Option("--baseline", help="A report JSON from `gradscope baseline`: fail on regressions against it."),
    ] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write JUnit XML here (a test case per rule and layer).")
    ] = None,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help='Write a Markdown summary here (e.g. "$GITHUB_STEP_SUMMARY").')
    ] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML report with charts.")] = None,
    github: Annotated[
        bool, typer.Option("--github", help="Print GitHub Actions annotations (::error ...) on stdout.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write this run's report JSON here (a new baseline).")
    ] = None,
    fail_on: Annotated[
        CheckFailOn | None,
        typer.Option("--fail-on", help="Lowest severity that fails (default: policy.fail_on, error)."),
    ] = None,
    factor: FactorOpt = None,
    batches: BatchesOpt = None,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    model_kwargs: KwargsOpt = None,
    input_shape: ShapeOpt = None,
    input_dtype: DtypeOpt = None,
    probe: ProbeOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Gate a model's gradient health in CI: scan, apply the policy, compare with a baseline, write reports.

    Exit 0 when no check fails, 1 on failing checks or baseline regressions, 2 on bad input."""
    with _errors(debug):
        outputs = {"--junit": junit, "--markdown": markdown, "--html": html, "--output": output}
        for option, path in outputs.items():
            if path is not None:
                ensure_writable(path, option)
        from .baseline import compare, read_baseline
        from .config import load_config
        from .policy import evaluate

        settings = load_config(config)  # the policy is validated before any model code runs
        _check_factor(factor)
        base = read_baseline(baseline_file) if baseline_file is not None else None
        overrides: dict[str, Any] = {
            "probe.batches": batches,
            "probe.batch_size": batch_size,
            "probe.seed": seed,
            "probe.device": device,
        }
        if base is not None:
            # Probe like the baseline did unless told otherwise: the numbers are only comparable that way.
            defaults = {
                "probe.batches": base.probe.batches,
                "probe.batch_size": base.probe.batch_size,
                "probe.seed": base.probe.seed,
            }
            overrides = {k: (defaults.get(k) if v is None else v) for k, v in overrides.items()}
        report = _scan(
            target,
            config=config,
            overrides=overrides,
            model_kwargs=model_kwargs,
            input_shape=input_shape,
            input_dtype=input_dtype,
            probe=probe,
        )
        comparison = None
        if base is not None:
            comparison = compare(
                base,
                report,
                policy=settings.policy,
                fail_on=fail_on,
                factor=factor,
                baseline_label=str(baseline_file),
                current_label=target,
            )
        result = evaluate(report, settings.policy, fail_on=fail_on.value if fail_on else None, comparison=comparison)
        texts = _render_outputs(result, junit=junit, markdown=markdown, html=html, output=output)
        _print_check(result, github=github)
        _write_all(texts)
    raise typer.Exit(EXIT_OK if result.passed else EXIT_FINDINGS)


def baseline(
    target: Annotated[str, typer.Argument(help=TARGET_HELP)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the report JSON (atomically).")],
    config: ConfigOpt = None,
    batches: BatchesOpt = None,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    model_kwargs: KwargsOpt = None,
    input_shape: ShapeOpt = None,
    input_dtype: DtypeOpt = None,
    probe: ProbeOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Scan a model and save its report JSON as the baseline that `gradscope check --baseline` compares against.

    Exit 0 once written, whatever the model's health (a baseline records the state you accept); 2 on bad input."""
    with _errors(debug):
        ensure_writable(output, "--output")
        from .config import load_config
        from .report import _format as fmt
        from .report import render_json, write_atomic

        load_config(config)
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
        )
        write_atomic(output, render_json(report))
        _stderr().print(
            f"baseline written to {output}: {fmt.plural(len(report.layers), 'layer')}, {fmt.verdict(report).text}",
            highlight=False,
            markup=False,
        )
    raise typer.Exit(EXIT_OK)


def diff(
    baseline_report: Annotated[Path, typer.Argument(metavar="A.json", help="The earlier report (the baseline).")],
    current_report: Annotated[Path, typer.Argument(metavar="B.json", help="The later report.")],
    format: Annotated[DiffFormat, typer.Option("--format", help="How to render the comparison.")] = DiffFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write it here (atomically).")] = None,
    config: ConfigOpt = None,
    factor: FactorOpt = None,
    fail_on: Annotated[
        CheckFailOn | None,
        typer.Option("--fail-on", help="Severity at which a new finding counts (default: policy.fail_on, error)."),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Compare two saved reports layer by layer: regressions, improvements, added and removed layers.

    Exit 0 when nothing regressed, 1 on regressions or new failing findings, 2 on bad input."""
    with _errors(debug):
        if output is not None:
            ensure_writable(output, "--output")
        from .baseline import compare, read_report, render_comparison
        from .config import load_config
        from .policy import regression_checks

        settings = load_config(config)
        _check_factor(factor)
        a = read_report(baseline_report, role="report")
        b = read_report(current_report, role="report")
        threshold = fail_on.value if fail_on else None
        comparison = compare(
            a,
            b,
            policy=settings.policy,
            fail_on=threshold,
            factor=factor,
            baseline_label=str(baseline_report),
            current_label=str(current_report),
        )
        failing = bool(comparison.new_findings) or any(
            c.failed for c in regression_checks(comparison, settings.policy, comparison.fail_on)
        )
        if format is DiffFormat.html:
            from .report.html import render_html

            text = render_html(comparison.current, comparison=comparison)
        elif format is DiffFormat.table and output is None:
            text = None
        else:
            text = render_comparison(comparison, format.value)
        from .baseline import print_comparison

        deliver(output, text=text, draw=lambda console: print_comparison(comparison, console), what="comparison")
    raise typer.Exit(EXIT_FINDINGS if failing else EXIT_OK)


# ------------------------------------------------------------------------------------------------ helpers


def ensure_writable(path: Path, option: str) -> None:
    """Fail early, with the option's name, when ``path`` cannot be written (the scan would be wasted)."""
    text = str(path)
    if text.startswith(("/dev/", "/proc/")):
        return
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise ConfigError(f"{option} {path}: directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: directory {parent} is not writable")


def _check_factor(factor: float | None) -> None:
    if factor is not None and not (factor > 1 and factor != float("inf")):
        raise ConfigError(f"--factor {factor:g} must be a number > 1 (e.g. 10: a tenfold move is a regression)")


def _render_outputs(
    result: Any, *, junit: Path | None, markdown: Path | None, html: Path | None, output: Path | None
) -> list[tuple[Path, str]]:
    """Render every requested file before writing any: a renderer bug leaves no partial set behind."""
    texts: list[tuple[Path, str]] = []
    if junit is not None:
        from .report.junit import render_junit

        texts.append((junit, render_junit(result)))
    if markdown is not None:
        from .policy import check_markdown

        texts.append((markdown, check_markdown(result)))
    if html is not None:
        from .report.html import render_html

        texts.append((html, render_html(result.report, result=result)))
    if output is not None:
        from .report import render_json

        texts.append((output, render_json(result.report)))
    return texts


def _write_all(texts: list[tuple[Path, str]]) -> None:
    from .report import write_atomic

    for path, text in texts:
        write_atomic(path, text)
    if texts:
        names = ", ".join(str(p) for p, _ in texts)
        _stderr().print(f"written: {names}", highlight=False, markup=False)


def _print_check(result: Any, *, github: bool) -> None:
    from .policy import print_check
    from .report import render_terminal

    console = _stdout_console()
    report: Report = result.report
    render_terminal(report, console)
    print_check(result, console)
    if github:
        from .report.github import render_github

        sys.stdout.flush()
        console.file.flush()
        sys.stdout.write(render_github(result))
        sys.stdout.flush()


__all__ = ["register", "check", "baseline", "diff", "ensure_writable", "EXIT_ERROR"]
