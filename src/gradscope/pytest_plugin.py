"""The gradscope pytest plugin (entry point ``pytest11: gradscope``): a fixture and an option, nothing else.

- fixture ``gradient_health``: ``gradient_health(model, batches=None, config=None, **kwargs)`` runs
  ``gradscope.testing.assert_gradient_health`` and returns its CheckResult (a failing check fails the test with
  the rendered report).
- option ``--gradscope-reports DIR``: every ``gradient_health`` call also writes its report to DIR as
  ``<test id>.json`` (``gradscope.report/1``), ``.md`` and ``.html``, passing or failing.

The plugin loads in every pytest run of a project that has gradscope installed, so this module imports only the
standard library and pytest; gradscope (and torch) load when the fixture is first called. Tests that do not use
the fixture see no difference.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

OPTION = "--gradscope-reports"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradscope", "gradient-flow checks (gradscope)")
    group.addoption(
        OPTION,
        dest="gradscope_reports",
        metavar="DIR",
        default=None,
        help="write the report of every gradient_health check to DIR (JSON, Markdown and HTML per call)",
    )


@pytest.fixture
def gradient_health(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``gradient_health(model, batches=None, config=None, **kwargs)``: assert gradient health (see
    gradscope.testing.assert_gradient_health); with --gradscope-reports DIR, also write the reports."""
    directory = request.config.getoption("gradscope_reports")
    calls = 0

    def check(model: Any, batches: Any = None, config: Any = None, **kwargs: Any) -> Any:
        nonlocal calls
        from gradscope.testing import GradientHealthError, assert_gradient_health

        calls += 1
        stem = _stem(request.node.nodeid) + (f"-{calls}" if calls > 1 else "")
        try:
            result = assert_gradient_health(model, batches, config, **kwargs)
        except GradientHealthError as exc:
            if directory:
                _write(Path(directory), stem, exc.result)
            raise
        if directory:
            _write(Path(directory), stem, result)
        return result

    return check


def _stem(nodeid: str) -> str:
    """A file name from a test id: ``tests/test_x.py::test_y[a-b]`` → ``tests_test_x.py_test_y_a-b``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("._") or "gradient_health"


def _write(directory: Path, stem: str, result: Any) -> None:
    from gradscope.report import render_json, write_atomic
    from gradscope.report.check import check_markdown
    from gradscope.report.html import render_html

    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / f"{stem}.json", render_json(result.report))
    write_atomic(directory / f"{stem}.md", check_markdown(result))
    write_atomic(directory / f"{stem}.html", render_html(result.report, result=result))
