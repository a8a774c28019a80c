"""``gradscope check``, ``baseline`` and ``diff``: gradient health as a CI gate.

Exit codes (design.md): **0** the check passes / no regression, **1** failing checks or regressions, **2** bad input
(a config, a baseline that is not a usable report, an output path that cannot be written): one line on stderr, no
traceback unless ``--debug``. Output paths are checked before the model is loaded, so a typo in ``--junit`` costs no
scan; every file is written atomically (never half-written).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..config import check_factor
from ..vocab import FailOn, Format
from . import common
from .common import (
    BatchesOpt,
    BatchSizeOpt,
    ConfigOpt,
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    KwargsOpt,
    OptimizerOpt,
    ProbeOpt,
    SeedOpt,
    ShapeOpt,
    TargetArg,
    WeightsOpt,
)

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from rich.console import Console

    from ..ci.policy import CheckResult

FactorOpt = Annotated[
    float | None,
    typer.Option(
        "--factor",
        help="A layer whose signal or grad RMS moves by more than this is a regression (default: "
        "policy.baseline_factor, 10).",
    ),
]
CheckFailOnOpt = Annotated[
    FailOn | None, typer.Option("--fail-on", help="Lowest severity that fails (default: policy.fail_on, error).")
]
DIFF_FORMATS = (Format.TABLE, Format.MARKDOWN, Format.JSON, Format.HTML)


def check(
    target: TargetArg,
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
    fail_on: CheckFailOnOpt = None,
    factor: FactorOpt = None,
    optimizer: OptimizerOpt = None,
    batches: BatchesOpt = None,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    model_kwargs: KwargsOpt = None,
    input_shape: ShapeOpt = None,
    input_dtype: DtypeOpt = None,
    probe: ProbeOpt = None,
    weights: WeightsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Gate a model's gradient health in CI: scan, apply the policy, compare with a baseline, write reports.

    Exit 0 when no check fails, 1 on failing checks or baseline regressions, 2 on bad input."""
    with common.errors(debug):
        for option, path in (("--junit", junit), ("--markdown", markdown), ("--html", html), ("--output", output)):
            common.ensure_writable(path, option)
        _check_factor(factor)
        settings, spec = common.model_options(  # the policy is checked here, before any model code runs
            target,
            config=config,
            model_kwargs=model_kwargs,
            weights=weights,
            input_shape=input_shape,
            input_dtype=input_dtype,
            probe=probe,
            seed=seed,
            device=device,
            batches=batches,
            batch_size=batch_size,
            optimizer=optimizer,
        )
        probe_options = {"batches": batches, "batch_size": batch_size, "seed": seed, "optimizer": optimizer}
        from ..ci.baseline import read_baseline
        from ..pipeline import check_target, user_code_output

        base = read_baseline(baseline_file) if baseline_file is not None else None
        with common.progress() as tick, user_code_output():
            result = check_target(
                spec,
                settings,
                baseline=base,
                baseline_label=str(baseline_file) if baseline_file is not None else None,
                fail_on=fail_on.value if fail_on else None,
                factor=factor,
                keep_probe={key for key, value in probe_options.items() if value is not None},
                progress=tick,
            )
        texts = _render_files(result, junit=junit, markdown=markdown, html=html, output=output)
        _print_check(result, github=github)
        common.write_files(texts)
    raise typer.Exit(common.EXIT_OK if result.passed else common.EXIT_FINDINGS)


def baseline(
    target: TargetArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the report JSON (atomically).")],
    config: ConfigOpt = None,
    optimizer: OptimizerOpt = None,
    batches: BatchesOpt = None,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    model_kwargs: KwargsOpt = None,
    input_shape: ShapeOpt = None,
    input_dtype: DtypeOpt = None,
    probe: ProbeOpt = None,
    weights: WeightsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Scan a model and save its report JSON as the baseline that `gradscope check --baseline` compares against.

    Exit 0 once written, whatever the model's health (a baseline records the state you accept); 2 on bad input."""
    with common.errors(debug):
        common.ensure_writable(output, "--output")
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
            batches=batches,
            batch_size=batch_size,
            optimizer=optimizer,
        )
        from ..pipeline import scan_target, user_code_output
        from ..report import fmt, render_json, write_atomic

        with common.progress() as tick, user_code_output():
            report = scan_target(spec, settings, progress=tick)
        write_atomic(output, render_json(report))
        common.stderr_console().print(
            f"baseline written to {output}: {fmt.plural(len(report.layers), 'layer')}, {fmt.verdict(report).text}",
            highlight=False,
            markup=False,
        )
    raise typer.Exit(common.EXIT_OK)


def diff(
    baseline_report: Annotated[Path, typer.Argument(metavar="A.json", help="The earlier report (the baseline).")],
    current_report: Annotated[Path, typer.Argument(metavar="B.json", help="The later report.")],
    format: common.FormatOpt = Format.TABLE,
    output: common.OutputOpt = None,
    config: ConfigOpt = None,
    factor: FactorOpt = None,
    fail_on: Annotated[
        FailOn | None,
        typer.Option("--fail-on", help="Severity at which a new finding counts (default: policy.fail_on, error)."),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Compare two saved reports layer by layer: regressions, improvements, added and removed layers.

    Exit 0 when nothing regressed, 1 on regressions or new failing findings, 2 on bad input."""
    with common.errors(debug):
        common.supported(format, DIFF_FORMATS, "diff")
        common.ensure_writable(output, "--output")
        _check_factor(factor)
        settings = common.settings(config, {})
        from ..ci.baseline import read_report
        from ..ci.policy import compare, regression_checks
        from ..report.diff import print_comparison, render_comparison
        from ..report.html import render_html

        a = read_report(baseline_report, role="report")
        b = read_report(current_report, role="report")
        comparison = compare(
            a,
            b,
            policy=settings.policy,
            fail_on=fail_on.value if fail_on else None,
            factor=factor,
            baseline_label=str(baseline_report),
            current_label=str(current_report),
        )
        failing = bool(comparison.new_findings) or any(
            c.failed for c in regression_checks(comparison, settings.policy, comparison.fail_on)
        )
        if format is Format.HTML:
            common.deliver(output, text=render_html(comparison.current, comparison=comparison), what="comparison")
        elif format is Format.TABLE:
            common.deliver(output, draw=lambda console: print_comparison(comparison, console), what="comparison")
        else:
            common.deliver(output, text=render_comparison(comparison, format.value), what="comparison")
    raise typer.Exit(common.EXIT_FINDINGS if failing else common.EXIT_OK)


def _check_factor(factor: float | None) -> None:
    if factor is not None:
        check_factor(factor, "--factor")


def _render_files(
    result: CheckResult, *, junit: Path | None, markdown: Path | None, html: Path | None, output: Path | None
) -> list[tuple[Path, str]]:
    """Render every requested file before writing any: a renderer bug leaves no partial set behind."""
    from ..report import render_json
    from ..report.check import check_markdown
    from ..report.html import render_html
    from ..report.junit import render_junit

    renderers: tuple[tuple[Path | None, Callable[[], str]], ...] = (
        (junit, lambda: render_junit(result)),
        (markdown, lambda: check_markdown(result)),
        (html, lambda: render_html(result.report, result=result)),
        (output, lambda: render_json(result.report)),
    )
    return [(path, render()) for path, render in renderers if path is not None]


def _print_check(result: CheckResult, *, github: bool) -> None:
    from ..report import render_terminal
    from ..report.check import print_check
    from ..report.github import render_github

    def draw(console: Console) -> None:
        render_terminal(result.report, console)
        print_check(result, console)

    common.deliver(None, draw=draw)
    if github:
        common.deliver(None, text=render_github(result))
    sys.stdout.flush()
