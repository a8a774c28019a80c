"""Shared test fixtures: golden-file comparison, a ``Report`` factory, one torch thread for the session.

Golden files live in ``tests/golden/``; ``pytest --overwrite`` rewrites them from the current output (review
the diff before committing it). Plain helper functions (running the CLI, the one-line-error contract, model
files) are in ``helpers.py``; target model files are in ``assets/``.

Tests that start the CLI in real subprocesses or train models for more than about a second are marked
``@pytest.mark.slow``: ``python -m pytest -m "not slow"`` is the quick loop, plain ``python -m pytest`` (CI) runs
everything.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterator, Sequence
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


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Torch runs single-threaded in the tests (and is put back afterwards): the models are far too small to gain
    from threads, and on a shared machine threads make them many times slower. Subprocesses get
    ``OMP_NUM_THREADS=1`` from ``helpers.cli_env``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


@pytest.fixture(scope="module")
def recorded_lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The lines of a real ``gradscope.watch/1`` log: 3 recorded steps of a small MLP (the first carries meta)."""
    import torch
    from torch import nn

    import gradscope

    log = tmp_path_factory.mktemp("watch") / "run.jsonl"
    with torch.random.fork_rng(devices=[]):  # the session's global RNG is left alone
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    with gradscope.watch(model, every=1, log=log) as w:
        for x in [torch.randn(4, 8, generator=g) for _ in range(3)]:
            loss = model(x).pow(2).mean()
            loss.backward()
            w.step(loss)
            opt.step()
            opt.zero_grad()
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and "meta" in json.loads(lines[0])
    return lines
