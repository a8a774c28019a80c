"""``gradscope scan``: probe a model's gradient flow and report it (exit 1 on findings at or above --fail-on)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..vocab import Format
from . import common
from .common import (
    BatchesOpt,
    BatchSizeOpt,
    ConfigOpt,
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    FailOnOpt,
    FormatOpt,
    HtmlOpt,
    KwargsOpt,
    OptimizerOpt,
    OutputOpt,
    ProbeOpt,
    SeedOpt,
    ShapeOpt,
    TargetArg,
    WeightsOpt,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..results import Report

FORMATS = (Format.TABLE, Format.JSON, Format.MARKDOWN, Format.HTML)


def scan(
    target: TargetArg,
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
    format: FormatOpt = Format.TABLE,
    output: OutputOpt = None,
    html: HtmlOpt = None,
    fail_on: FailOnOpt = None,
    fix: Annotated[
        bool, typer.Option("--fix", help="Apply the lead suggestion per finding in memory, re-scan, show before/after.")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Probe a model's gradient flow and report vanishing, exploding, saturated and dead layers, with fixes.

    The exit code always judges the model as given, also with --fix."""
    with common.errors(debug):
        common.supported(format, FORMATS, "scan")
        common.ensure_writable(output, "--output")
        common.ensure_writable(html, "--html")
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

        with common.progress() as tick, user_code_output():
            report = scan_target(spec, settings, fix=fix, progress=tick)
        page = _html_page(report) if html is not None else None  # rendered first: a bug writes nothing
        emit(report, format, output)
        if html is not None and page is not None:
            common.write_files([(html, page)])
    raise typer.Exit(common.exit_code(report, fail_on))


def emit(report: Report, fmt: Format, output: Path | None) -> None:
    from ..report import render_json, render_markdown, render_terminal
    from ..report.html import render_html

    if fmt is Format.JSON:
        common.deliver(output, text=render_json(report))
    elif fmt is Format.MARKDOWN:
        common.deliver(output, text=render_markdown(report))
    elif fmt is Format.HTML:
        common.deliver(output, text=render_html(report))
    else:
        common.deliver(output, draw=lambda console: render_terminal(report, console))


def _html_page(report: Report) -> str:
    from ..report.html import render_html

    return render_html(report)
