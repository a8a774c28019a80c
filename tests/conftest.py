"""Shared test fixtures: golden-file comparison and a ``Report`` factory.

Golden files live in ``tests/golden/``; ``pytest --overwrite`` rewrites them from the current output (review
the diff before committing it).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from gradscope.results import Finding, Fix, LayerStats, ModelInfo, ProbeInfo, Report, Suggestion, Summary

GOLDEN_DIR = Path(__file__).parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--overwrite",
        action="store_true",
        default=False,
        help="rewrite tests/golden/ files from the current output instead of comparing",
    )


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``golden(name, text)``: compare ``text`` with ``tests/golden/<name>``; a mismatch fails with a diff."""
    overwrite = bool(request.config.getoption("--overwrite"))

    def check(name: str, text: str) -> None:
        path = GOLDEN_DIR / name
        if overwrite:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="")
            return
        if not path.exists():
            pytest.fail(f"golden file tests/golden/{name} is missing; run `pytest --overwrite` to create it")
        expected = path.read_text(encoding="utf-8")
        if text != expected:
            diff = difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"golden/{name}",
                tofile="actual",
            )
            pytest.fail(
                f"output differs from tests/golden/{name} (rerun with --overwrite if intended):\n" + "".join(diff),
                pytrace=False,
            )

    return check


@pytest.fixture
def make_report() -> Callable[..., Report]:
    """A ``Report`` factory with plausible defaults; pass only what a test is about."""

    def make(
        layers: Sequence[LayerStats] = (),
        *,
        findings: Sequence[Finding] = (),
        suggestions: Sequence[Suggestion] = (),
        summary: Summary | None = None,
        fix: Fix | None = None,
        target: str = "tests/fixtures/models.py:Model",
        class_name: str = "Model",
        parameters: int | None = None,
        trainable_parameters: int | None = None,
        **probe: Any,
    ) -> Report:
        total = sum(layer.parameters for layer in layers) if parameters is None else parameters
        probe_info: dict[str, Any] = {"batches": 4, "batch_size": 16, "seed": 0, "loss": "cross_entropy"}
        probe_info |= {"device": "cpu", "dtype": "float32"} | probe
        return Report(
            model=ModelInfo(
                target=target,
                class_name=class_name,
                parameters=total,
                trainable_parameters=total if trainable_parameters is None else trainable_parameters,
            ),
            probe=ProbeInfo(**probe_info),
            layers=tuple(layers),
            findings=tuple(findings),
            suggestions=tuple(suggestions),
            summary=summary or Summary(None, None, None, None, None),
            fix=fix,
        )

    return make
