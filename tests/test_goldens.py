"""Golden files for the renderers that ``test_render.py`` does not cover: the check summary (Markdown), JUnit XML,
the diff (table, Markdown, JSON), the trial (terminal, JSON) and the watch timeline (terminal, Markdown, JSON).

Every input is built by hand from fixed numbers: no model is scanned or trained, so a golden changes only when a
renderer (or the policy and comparison arithmetic the CI renderers sit on) changes, not when the diagnosis does.
Nothing here depends on the clock: the reports carry no timing, the trial's is fixed, JUnit's root ``time`` is
stripped. Terminal output is rendered without colour at 80 and 120 columns (``WIDTHS``): the goldens at 80 are
the ones to read when a layout changes; ``test_text_fits_its_width`` checks every command's text at both widths.
``pytest --overwrite tests/test_goldens.py`` rewrites the files in ``tests/golden/`` (review the diff before
committing it).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import Golden, MakeReport, finding, flat_layer, invoke, make_policy, render_text, strip_trailing
from rich.cells import cell_len
from rich.console import Console

from gradscope.ci.policy import CheckResult, evaluate, judge
from gradscope.config import PolicyConfig
from gradscope.records import LayerFacts, LayerKind
from gradscope.report import render_terminal
from gradscope.report.check import check_markdown, print_check
from gradscope.report.diff import render_comparison
from gradscope.report.junit import render_junit
from gradscope.report.timeline import render_timeline_json, render_timeline_markdown, render_timeline_terminal
from gradscope.report.trial import render_trial_json, render_trial_terminal
from gradscope.results import Remedy, Report, Severity, Status, Suggestion, Summary, Where
from gradscope.trial import Arm, DataInfo, Run, Task, TrialReport
from gradscope.vocab import Optimizer
from gradscope.watching.timeline import LayerMeta, Step, Timeline, TimelineBuilder
from gradscope.watching.timeline import Run as WatchRun

V, D = Status.VANISHING, Status.DEAD
WIDTHS = (80, 120)

# ------------------------------------------------------------------------------ check, JUnit and diff


def _baseline(make_report: MakeReport) -> Report:
    """Last week's report: a vanishing layer (accepted debt, still there today), a dead ReLU (a warning) and an
    exploding head (gone today: resolved)."""
    layers = [
        flat_layer(0, "embed", 1e-2, 1e-2, type_="Embedding"),
        flat_layer(1, "body.0", 2e-2, 1e-2),
        flat_layer(2, "body.1", None, 1e-2, D, type_="ReLU", parameters=0),
        flat_layer(3, "body.2", 1e-6, 1e-6, V),
        flat_layer(4, "norm", 1e-4, 1e-4, V, type_="LayerNorm"),  # vanishing, with no finding: cured today
        flat_layer(5, "old_head", 3e-2, 2e-2),
    ]
    findings = [
        finding("vanishing_gradient", Severity.ERROR, "body.2", reference_grad_rms=3e-2, threshold=1e-3),
        finding("dead_units", Severity.WARNING, "body.1", dead_fraction=0.8),
        finding("exploding_gradient", Severity.ERROR, "old_head", worst_ratio=120.0),  # resolved: the layer is gone
    ]
    summary = Summary(3e-2, "body.2", 3.3e-5, 0.4, 0.9)
    return make_report(layers, findings=findings, summary=summary, target="model.py", class_name="Net")


def _current(make_report: MakeReport) -> Report:
    """Today's report of the same model: two layers regressed, one improved, the head renamed, a model-level note,
    probed with another batch size."""
    layers = [
        flat_layer(0, "embed", 1e-7, 1e-7, V, type_="Embedding"),
        flat_layer(1, "body.0", 1e-6, 1e-6, V),
        flat_layer(2, "body.1", None, 1e-2, D, type_="ReLU", parameters=0),
        flat_layer(3, "body.2", 1e-6, 1e-6, V),
        flat_layer(4, "norm", 1e-2, 1e-2, type_="LayerNorm"),
        flat_layer(5, "head", 3e-2, 2e-2),
    ]
    findings = [
        finding(
            "vanishing_gradient", Severity.ERROR, "embed", "body.0", "body.2", reference_grad_rms=3e-2, threshold=1e-3
        ),
        finding("dead_units", Severity.WARNING, "body.1", dead_fraction=0.8),
        finding("input_scale", Severity.INFO, input_rms=1.0),
    ]
    summary = Summary(3e-2, "embed", 3.3e-6, 1.5, 0.9)
    return make_report(layers, findings=findings, summary=summary, target="model.py", class_name="Net", batch_size=8)


@pytest.fixture
def checked(make_report: MakeReport) -> CheckResult:
    """The current report judged against the baseline under a policy that ignores the dead ReLU: failing,
    known, warned and ignored checks, regressions, an improvement, an added and a removed layer."""
    policy = make_policy(layers={"body.1": {"dead_units": "ignore"}})
    return judge(
        _current(make_report),
        policy,
        baseline=_baseline(make_report),
        baseline_label="base.json",
        current_label="now.json",
    )


@pytest.fixture
def passed(make_report: MakeReport) -> CheckResult:
    """A healthy report with no findings and no baseline."""
    layers = [flat_layer(0, "fc1", 1e-2, 1e-2), flat_layer(1, "act", None, 1e-2, type_="ReLU", parameters=0)]
    layers.append(flat_layer(2, "fc2", 2e-2, 2e-2))
    report = make_report(layers, summary=Summary(2e-2, "fc1", 0.5, 0.02, 0.9), target="model.py", class_name="Net")
    return evaluate(report, PolicyConfig())


def _junit(result: CheckResult) -> str:
    text = render_junit(result)
    # The root's time="…" is the scan's duration: the one clock-dependent attribute.
    return re.sub(r'(<testsuites [^>]*?) time="[^"]*"', r"\1", text, count=1)


def test_check_markdown_golden(checked: CheckResult, passed: CheckResult, golden: Golden) -> None:
    assert not checked.passed and passed.passed
    golden("check_failed.md", check_markdown(checked))
    golden("check_passed.md", check_markdown(passed))


def test_junit_golden(checked: CheckResult, passed: CheckResult, golden: Golden) -> None:
    assert ' time="' not in _junit(checked).split("\n")[1]
    golden("junit_failed.xml", _junit(checked))
    golden("junit_passed.xml", _junit(passed))


@pytest.mark.parametrize("width", WIDTHS)
def test_diff_table_golden(checked: CheckResult, width: int, golden: Golden) -> None:
    assert checked.comparison is not None
    golden(f"diff_{width}.txt", render_comparison(checked.comparison, "table", width=width))


@pytest.mark.parametrize(("fmt", "ext"), [("markdown", "md"), ("json", "json")])
def test_diff_golden(checked: CheckResult, fmt: str, ext: str, golden: Golden) -> None:
    assert checked.comparison is not None
    golden(f"diff.{ext}", strip_trailing(render_comparison(checked.comparison, fmt)))


@pytest.mark.parametrize("width", WIDTHS)
def test_check_text_golden(checked: CheckResult, passed: CheckResult, width: int, golden: Golden) -> None:
    golden(f"check_failed_{width}.txt", render_text(lambda console: _print_check(checked, console), width=width))
    golden(f"check_passed_{width}.txt", render_text(lambda console: _print_check(passed, console), width=width))


def _print_check(result: CheckResult, console: Console) -> None:
    """What ``gradscope check`` prints: the scan report, then the verdict block."""
    render_terminal(result.report, console)
    print_check(result, console)


# -------------------------------------------------------------------------------------------------- trial

CLIP = Suggestion(Remedy.CLIP, (), Where.MODEL, {"max_norm": 1.0}, "caps the update of a step", ("exploding",))
NORM = Suggestion(
    Remedy.NORMALIZATION,
    ("0", "2", "4"),
    Where.AFTER,
    {"norm": "BatchNorm1d"},
    "re-centres each layer's output so the sigmoid stays off its flat tails",
    ("vanishing_gradient",),
)
HUGE_L2 = Suggestion(Remedy.REGULARIZE, ("0",), Where.MODEL, {"penalty": "l2", "lambda": 1e3}, "shrinks weights")
PSEUDO = Suggestion(Remedy.PSEUDO_NORM, ("6",), Where.AFTER, {"momentum": 0.1}, "rescales the backward signal")


def _curve(start: float, end: float, n: int) -> tuple[float, ...]:
    """A loss curve that falls geometrically from ``start`` to ``end`` over ``n`` points (a trial's curve has
    ``min(steps, 100)`` points)."""
    return tuple(round(start * (end / start) ** (i / (n - 1)), 4) for i in range(n))


def _trial(**changes: object) -> TrialReport:
    fields: dict[str, object] = {
        "steps": 60,
        "optimizer": Optimizer.ADAM,
        "lr": 1e-3,
        "seeds": (0,),
        "batch_size": 64,
        "data": DataInfo("dataset", 1438, 359, Task.CLASSIFICATION, 10, "cross_entropy"),
        "arms": (),
        "best": None,
        "helps": False,
        "target": "examples/deep_sigmoid.py",
        "timing": {"seconds": 12.5},  # fixed: the clock never reaches a golden
    }
    return TrialReport(**(fields | changes))  # type: ignore[arg-type]


def _arm(*runs: Run) -> Arm:
    return Arm(runs[0].remedy, tuple(replace(r, seed=k) for k, r in enumerate(runs)))


TRIALS = {
    # Three seeds. Normalization rescues the model, clipping barely helps, an over-strong penalty diverges.
    "helps": _trial(
        seeds=(0, 1, 2),
        arms=(
            _arm(
                Run("none", 2.301, 2.302, 0.1, _curve(2.31, 2.30, 60), 60, False),
                Run("none", 2.302, 2.303, 0.09, _curve(2.31, 2.30, 60), 60, False),
                Run("none", 2.300, 2.301, 0.11, _curve(2.31, 2.30, 60), 60, False),
            ),
            _arm(
                Run(
                    "normalization",
                    0.152,
                    0.231,
                    0.94,
                    _curve(2.31, 0.15, 60),
                    60,
                    False,
                    (NORM, CLIP),
                    ((PSEUDO, "n/a"),),
                ),
                Run(
                    "normalization",
                    0.171,
                    0.25,
                    0.92,
                    _curve(2.31, 0.17, 60),
                    60,
                    False,
                    (NORM, CLIP),
                    ((PSEUDO, "n/a"),),
                ),
                Run(
                    "normalization",
                    0.14,
                    0.22,
                    0.95,
                    _curve(2.31, 0.14, 60),
                    60,
                    False,
                    (NORM, CLIP),
                    ((PSEUDO, "n/a"),),
                ),
            ),
            _arm(
                Run("clip", 2.05, 2.07, 0.21, _curve(2.31, 2.05, 60), 60, False, (CLIP,)),
                Run("clip", 2.1, 2.11, 0.18, _curve(2.31, 2.1, 60), 60, False, (CLIP,)),
                Run("clip", 2.0, 2.02, 0.24, _curve(2.31, 2.0, 60), 60, False, (CLIP,)),
            ),
            _arm(
                Run("regularize", None, None, None, (2.31, 2.6, 3.4, 4.1, math.nan), 5, True, (HUGE_L2,)),
                Run("regularize", None, None, None, (2.31, 2.7, 3.5, math.nan), 4, True, (HUGE_L2,)),
                Run("regularize", None, None, None, (2.31, 2.5, 3.3, 4.0, 4.2, math.nan), 6, True, (HUGE_L2,)),
            ),
        ),
        best="normalization",
        helps=True,
    ),  # fmt: skip
    # One seed: the best run beats the untreated one but is far from trained: the caveat.
    "caveat": _trial(
        data=DataInfo("synthetic", 819, 205, Task.CLASSIFICATION, 4, "cross_entropy"),
        optimizer=Optimizer.SGD,
        lr=0.1,
        steps=5,
        arms=(
            _arm(Run("none", 1.39, 1.38, 0.25, (1.39, 1.39, 1.38, 1.38, 1.38), 5, False)),
            _arm(Run("normalization", 1.2, 1.21, 0.41, (1.39, 1.33, 1.28, 1.24, 1.2), 5, False, (NORM,))),
        ),
        best="normalization",
        helps=True,
        target=None,
    ),
    # A healthy regression model: only the untreated run, with a note; the seeds kept the model's own init.
    "untreated": _trial(
        data=DataInfo("dataset", 48, 12, Task.REGRESSION, None, "mse"),
        steps=150,
        seeds=(0, 1),
        init_varies=False,
        arms=(
            _arm(
                Run("none", 0.031, 0.044, None, _curve(1.2, 0.031, 100), 150, False),
                Run("none", 0.035, 0.046, None, _curve(1.2, 0.035, 100), 150, False),
            ),
        ),
        note="the scan found nothing to treat: only the untreated model was trained",
    ),
}


@pytest.mark.parametrize("name", sorted(TRIALS))
def test_trial_golden(name: str, golden: Golden) -> None:
    report = TRIALS[name]
    for width in WIDTHS:
        golden(f"trial_{name}_{width}.txt", render_text(lambda c: render_trial_terminal(report, c), width=width))
    golden(f"trial_{name}.json", render_trial_json(report))


# ----------------------------------------------------------------------------------------------- timeline


KINDS = [("0", "Linear", 136), ("1", "Tanh", 0), ("2", "Linear", 272), ("3", "Tanh", 0), ("4", "Linear", 68)]


def _watch_run(poisoned: bool) -> WatchRun:
    """Eight recorded steps (every 2) of a 3-Linear Tanh MLP in full mode; layer 1 was not measured at step 6.
    ``poisoned``: layer 4 goes non-finite from step 10, and the log had one torn line."""
    metas = tuple(
        LayerMeta(
            LayerFacts(name, type_, LayerKind.LINEAR if params else LayerKind.ACTIVATION, params, params > 0),
            order,
            (32, 16),
        )
        for order, (name, type_, params) in enumerate(KINDS)
    )
    steps = []
    for i, step in enumerate(range(0, 16, 2)):
        layers: dict[str, dict[str, float]] = {}
        weights: dict[str, float] = {}
        for depth, (name, _type, params) in enumerate(KINDS):
            # Smaller toward the input, shrinking as training goes; three significant digits, exact in the golden.
            signal = float(f"{10.0 ** (-3 + depth * 0.5 - i * 0.05):.3g}")
            stats = {"signal_rms": signal, "activation_rms": 0.6, "activation_std": 0.55}
            if params:
                stats["grad_rms"] = signal * 2
                weights[name] = 0.25
            if poisoned and name == "4" and step >= 10:
                stats["grad_rms"] = stats["signal_rms"] = math.nan
            if name == "1" and step == 6:
                del stats["signal_rms"]
            layers[name] = stats
        steps.append(Step(step, layers, weights, round(2.3 - 0.1 * i, 2)))
    meta = {
        "schema": "gradscope.watch/1",
        "model": "Sequential",
        "mode": "full",
        "every": 2,
        "world_size": 1,
        "window": 4,
        "batch_size": 32,
        "device": "cpu",
        "dtype": "float32",
        "parameters": 476,
        "trainable_parameters": 476,
        "layers": [m.to_dict() for m in metas],
    }
    return WatchRun(meta, metas, tuple(steps), skipped_lines=1 if poisoned else 0, source="run.jsonl")


def _timeline(make_report: MakeReport, poisoned: bool) -> Timeline:
    """The timeline of the run with a hand-made report of its last four steps (no diagnosis runs)."""
    run = _watch_run(poisoned)
    first = {"4": {"nonfinite": 10}, "0": {"vanishing": 12}} if poisoned else {}
    layers = [
        flat_layer(i, name, 2e-3 if params else None, 1e-3, type_=type_, parameters=params)
        for i, (name, type_, params) in enumerate(KINDS)
    ]
    findings = []
    if poisoned:
        layers[4] = flat_layer(4, "4", math.nan, math.nan, Status.NONFINITE, parameters=68)
        findings = [finding("nonfinite", Severity.ERROR, "4", nan_batches=2)]
    report = make_report(
        layers,
        findings=findings,
        target="Sequential",
        class_name="Sequential",
        batches=4,
        batch_size=32,
        loss="training loss, steps 8–14",
    )
    builder = TimelineBuilder(source=run.source, meta=run.meta, layers=run.layers)
    for step in run.steps:
        builder.add(step)
    builder.unreadable = run.skipped_lines
    return builder.timeline(report=report, first=first)


@pytest.mark.parametrize("poisoned", [True, False], ids=["nonfinite", "calm"])
def test_timeline_golden(make_report: MakeReport, poisoned: bool, golden: Golden) -> None:
    t = _timeline(make_report, poisoned)
    name = "timeline_nonfinite" if poisoned else "timeline_calm"
    for width in WIDTHS:
        golden(f"{name}_{width}.txt", render_text(lambda console: render_timeline_terminal(t, console), width=width))
    golden(f"{name}.md", render_timeline_markdown(t))
    golden(f"{name}.json", render_timeline_json(t))


# ------------------------------------------------------------------------------------------------ widths

GOLDEN = Path(__file__).parent / "golden"
COMMANDS = ("render_", "scan_", "check_", "diff_", "trial_", "timeline_")  # scan twice: hand-made and real


def test_every_command_has_text_goldens_at_both_widths() -> None:
    for width in WIDTHS:
        names = [p.name for p in GOLDEN.glob(f"*_{width}.txt")]
        assert all(any(n.startswith(c) for n in names) for c in COMMANDS), (width, names)


@pytest.mark.parametrize("width", WIDTHS)
def test_text_fits_its_width(width: int) -> None:
    """Every command's text at 80 and 120 columns (the goldens are what the renderers print through the CLI's path
    to a pipe): no line wider than the console, none ending in blanks."""
    for path in sorted(GOLDEN.glob(f"*_{width}.txt")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert cell_len(line) <= width, f"{path.name}:{number} is {cell_len(line)} wide: {line!r}"
            assert line == line.rstrip(), f"{path.name}:{number} ends in blanks: {line!r}"


@pytest.mark.parametrize("columns", [None, "80"])
def test_piped_diff_has_no_padding_and_honours_columns(
    make_report: MakeReport, tmp_path: Path, columns: str | None
) -> None:
    """``gradscope diff`` into a pipe: 120 columns unless COLUMNS says otherwise, no trailing blanks, and every
    layer name whole even when it is a nested Hugging Face-style name."""
    base, now = _baseline(make_report), _current(make_report)
    long = "bert.encoder.layer.10.attention.output.dense"
    rename = {"body.0": long, "body.2": long.replace("10", "11")}
    base, now = (
        replace(r, layers=tuple(replace(la, name=rename.get(la.name, la.name)) for la in r.layers)) for r in (base, now)
    )
    (tmp_path / "a.json").write_text(json.dumps(base.to_dict()), encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps(now.to_dict()), encoding="utf-8")
    env = {"COLUMNS": columns} if columns else {"COLUMNS": ""}
    out = invoke("diff", tmp_path / "a.json", tmp_path / "b.json", env=env)
    assert out.code == 1, out
    width = int(columns or 120)
    lines = out.stdout.splitlines()
    assert all(cell_len(line) <= width and line == line.rstrip() for line in lines), out.stdout
    rule = next(i for i, line in enumerate(lines) if set(line) == {"─"})
    table = lines[rule + 1 : next(i for i, line in enumerate(lines) if line.startswith("Regressions"))]
    names: list[str] = []
    for line in table:  # the Layer column: a name wraps after a dot and goes on in the next line's first cell
        first = line.split(" ")[0]
        if names and names[-1].endswith("."):
            names[-1] += first
        elif first:
            names.append(first)
    assert names == ["embed", long, "body.1", long.replace("10", "11"), "norm", "old_head", "head"], table
    assert max(cell_len(line) for line in lines) > 80 if width == 120 else True
