"""Gradient health as a test assertion: ``assert_gradient_health(model, batches, config)``.

```python
from gradscope.testing import assert_gradient_health

def test_model_gradients_flow():
    assert_gradient_health(build_model(), [torch.randn(16, 32) for _ in range(2)], "configs/ci.yaml")
```

It runs ``gradscope.scan``, applies the config's ``policy`` section (and a baseline, if given) exactly as
``gradscope check`` does, and raises ``GradientHealthError`` — an ``AssertionError``, so pytest shows it as a test
failure — whose message is the rendered report with the failing checks at the end. On success it returns the
``CheckResult``, so a test can assert more. For the ``gradient_health`` fixture and ``--gradscope-reports DIR`` see
``gradscope.pytest_plugin``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .ci.policy import CheckResult
    from .config import Config
    from .results import Report

__all__ = ["assert_gradient_health", "GradientHealthError", "render_check_text"]


class GradientHealthError(AssertionError):
    """A failed gradient health check. ``.result`` is the CheckResult, ``.report`` its Report."""

    def __init__(self, message: str, result: CheckResult) -> None:
        super().__init__(message)
        self.result = result
        self.report: Report = result.report


def assert_gradient_health(
    model: Any,
    batches: Sequence[Any] | None = None,
    config: Config | str | Path | Mapping[str, Any] | None = None,
    *,
    loss_fn: Callable[[Any, Any], Any] | None = None,
    baseline: str | Path | Report | Mapping[str, Any] | None = None,
    fail_on: str | None = None,
    factor: float | None = None,
    target: str | None = None,
) -> CheckResult:
    """Scan ``model`` on ``batches`` and fail like ``gradscope check`` would.

    ``batches``: a sequence of batches (Tensor, tuple or dict each); None builds the probe's synthetic batches from
    the first layer (``config.probe`` sets how many and how large). ``config``: a Config, a YAML path, or a mapping
    of sections (``{"policy": {"fail_on": "warning"}}``). ``baseline``: a report JSON path, a Report, or its dict.
    """
    from .ci.baseline import read_baseline
    from .ci.policy import judge
    from .loading import ModelFileHooks
    from .pipeline import build_probe, probe_like
    from .results import Report, SchemaError
    from .scanner import scan

    settings = _config(config)
    base: Report | None = None
    label = str(baseline) if isinstance(baseline, (str, Path)) else "baseline"
    if isinstance(baseline, (str, Path)):
        base = read_baseline(baseline)
    elif isinstance(baseline, Report):
        base = baseline
    elif baseline is not None:
        try:
            base = Report.from_dict(baseline)
        except SchemaError as exc:
            from .errors import ConfigError

            raise ConfigError(f"baseline: {exc}") from None
    if base is not None:  # probe like the baseline did, as `gradscope check --baseline` does
        settings = probe_like(settings, base, label)
    if batches is None:
        batches = build_probe(model, ModelFileHooks(), settings)
    report = scan(model, batches, loss_fn=loss_fn, config=settings, target=target)
    result = judge(report, settings.policy, baseline=base, baseline_label=label, fail_on=fail_on, factor=factor)
    if not result.passed:
        raise GradientHealthError(render_check_text(result), result)
    return result


def render_check_text(result: CheckResult, width: int | None = None) -> str:
    """The terminal report and the check verdict as plain text (what the AssertionError carries), at the width of
    a pipe unless ``width`` is given."""
    from rich.console import Console

    from .report import render_terminal
    from .report.check import print_check
    from .report.terminal import render_text

    def draw(console: Console) -> None:
        render_terminal(result.report, console)
        print_check(result, console)
        if result.comparison is not None:
            from .report.diff import print_comparison

            console.print()
            print_comparison(result.comparison, console)

    return "gradient health check failed\n\n" + render_text(draw, width)


def _config(config: Config | str | Path | Mapping[str, Any] | None) -> Config:
    from .config import Config, load_config, merge

    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    if isinstance(config, (str, Path)):
        return load_config(config)
    return merge(Config(), config, source="config")
