"""``gradscope trial``: a real training comparison on digits, determinism, untouched model and RNG, the JSON
schema, the terminal chart, and every bad input as one line with exit code 2.

Models are tiny and seeded. The one real training test (a 20-layer sigmoid MLP on scikit-learn's digits) is the
point of the command: untreated it stays at chance, with normalization it learns; it is marked ``slow``, as is the
subprocess test. The CLI target is ``tests/assets/trial_clusters.py`` (a model with a ``dataset()`` hook).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fixtures import models as M
from helpers import (
    Outcome,
    assert_one_line_error,
    asset,
    invoke,
    render_text,
    run_cli,
    state_copy,
    without_timing,
)
from torch import nn

from gradscope.config import Config, TrialConfig
from gradscope.errors import ConfigError, ProbeError
from gradscope.loading import ModelFileHooks
from gradscope.pipeline import build_probe
from gradscope.report.trial import render_trial_json, render_trial_terminal, sparkline
from gradscope.results import Remedy, Suggestion, Where
from gradscope.scanner import scan
from gradscope.trial import (
    SCHEMA,
    Arm,
    Plan,
    Run,
    Stat,
    Task,
    TrialReport,
    check_data,
    parse_remedies,
    plan,
    run_trial,
    synthetic_task,
    verdict,
)

TRIAL_FILE = asset("trial_clusters.py")
DATA_LINE = "return means[y] + torch.randn(90, 8, generator=g), y"


def plan_for(model: nn.Module, remedies: tuple[str, ...], seed: int = 0) -> Plan:
    """What ``gradscope trial`` plans: the default probe's scan, then the candidates."""
    config = Config().with_overrides({"probe.seed": seed})
    report = scan(model, build_probe(model, ModelFileHooks(), config), config=config)
    return plan(model, report, remedies, config)


# ------------------------------------------------------------------------------------------------- models


def deep_sigmoid(depth: int = 20, width: int = 32, seed: int = 0) -> nn.Sequential:
    return M.stack(nn.Sigmoid, depth, width=width, in_features=64, seed=seed)


def small_mlp(inputs: int = 8, classes: int = 3, dropout: float = 0.0) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(inputs, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, classes))


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def clusters(n: int = 120, inputs: int = 8, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    means = 2 * torch.randn(classes, inputs, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return means[y] + torch.randn(n, inputs, generator=g), y


def trial_of(model: nn.Module, **overrides: Any) -> TrialReport:
    """``run_trial`` with a short, cheap default: 3 SGD steps on the clusters, no remedy, batch 8, seed 0."""
    kwargs: dict[str, Any] = dict(
        data=clusters(), candidates={}, steps=3, optimizer="sgd", lr=None, seed=0, seeds=1, batch_size=8
    )
    return run_trial(model, **(kwargs | overrides))


def clip() -> Suggestion:
    return Suggestion(Remedy.CLIP, (), Where.MODEL, {"max_norm": 1.0}, "test", ())


# ------------------------------------------------------------------------------------- the real training test


@pytest.mark.slow
def test_digits_normalization_rescues_a_deep_sigmoid_mlp() -> None:
    model = deep_sigmoid()
    before, rng = state_copy(model), torch.get_rng_state()
    chosen = plan_for(model, ("auto",))
    # the advice pairs normalization with clipping for a collapsed deep stack; clipping alone is not a candidate
    assert [s.remedy.value for s in chosen.selected["normalization"]] == ["normalization", "clip"]
    assert "clip" not in chosen.selected
    report = run_trial(
        model,
        data=digits(),
        candidates=chosen.selected,
        steps=200,
        optimizer="adam",
        lr=None,
        seed=0,
        seeds=2,
        build=lambda seed: deep_sigmoid(seed=seed),
        batch_size=64,
    )
    none = report.arm("none").accuracy
    assert none is not None and none.max < 0.3
    assert report.best == "normalization", [(a.remedy, a.accuracy) for a in report.arms]
    assert report.arm("normalization").accuracy.min >= 0.90  # type: ignore[union-attr]
    assert report.helps
    assert report.data.source == "dataset" and report.data.classes == 10
    assert (report.data.train, report.data.test) == (1438, 359)
    # untouched: weights, buffers, training flag, the global RNG
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(rng, torch.get_rng_state())
    # the chart at width 100 without colour: every run, readable, nothing wider than the console
    text = _terminal(report)
    assert "\x1b[" not in text
    assert all(len(line) <= 100 for line in text.splitlines())
    for arm in report.arms:
        assert any(line.startswith(arm.remedy + " ") for line in text.splitlines()), arm.remedy
    assert "★ best, helps" in text and "Best: normalization" in text and "It helps" in text


# ------------------------------------------------------------------------------------ determinism and state


def test_same_seed_same_json_and_model_untouched() -> None:
    model = small_mlp(dropout=0.2)
    before, rng = state_copy(model), torch.get_rng_state()
    kwargs: dict[str, Any] = dict(
        data=clusters(), candidates={"clip": (clip(),)}, steps=25, optimizer="sgd", lr=None, seed=3, batch_size=16
    )
    a, b = run_trial(model, **kwargs), run_trial(model, **kwargs)
    assert json.dumps(without_timing(a.to_dict())) == json.dumps(without_timing(b.to_dict()))
    c = run_trial(model, **{**kwargs, "seed": 4})
    assert c.to_dict()["arms"][0]["runs"][0]["curve"] != a.to_dict()["arms"][0]["runs"][0]["curve"]
    # three seeds by default (trial.seeds), each with its own minibatch order
    curves = [r["curve"] for r in a.to_dict()["arms"][0]["runs"]]
    assert len(curves) == 3 and curves[0] != curves[1] != curves[2]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert a.lr == 0.1 and a.optimizer.value == "sgd"


def test_seeds_rebuild_the_model_through_build() -> None:
    built: list[int] = []

    def build(seed: int) -> nn.Module:
        built.append(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(100 + seed)
            return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    model = build(7)
    built.clear()
    report = trial_of(model, steps=5, seed=7, seeds=3, build=build)
    assert built == [8, 9] and report.seeds == (7, 8, 9) and report.init_varies
    # the same batches for every arm of a seed, other weights for every seed: the first losses differ
    firsts = [r.curve[0] for r in report.untreated.runs]
    assert len(set(firsts)) == 3
    assert "seeds 7–9" in _terminal(report)
    same_init = trial_of(model, steps=5, seed=7, seeds=2)
    assert not same_init.init_varies and "same init" in _terminal(same_init)
    with pytest.raises(ConfigError, match="--seeds 0"):
        trial_of(model, seeds=0)


def test_json_schema() -> None:
    report = trial_of(small_mlp(), candidates={"clip": (clip(),)}, steps=150, optimizer="adam", batch_size=16, seeds=2)
    d = json.loads(render_trial_json(report))
    assert d["schema"] == SCHEMA == "gradscope.trial/2"
    keys = {"schema", "steps", "optimizer", "lr", "seeds", "init_varies", "data", "arms", "best", "helps", "timing"}
    assert keys <= set(d)
    assert d["lr"] == 1e-3 and d["steps"] == 150 and d["seeds"] == [0, 1]
    assert {"source": "dataset", "train": 96, "test": 24}.items() <= d["data"].items()
    assert [a["remedy"] for a in d["arms"]] == ["none", "clip"]
    for a in d["arms"]:
        assert {"remedy", "diverged", "test_accuracy", "test_loss", "final_train_loss", "applied", "skipped"} <= set(a)
        accuracies = [r["test_accuracy"] for r in a["runs"]]
        assert a["test_accuracy"] == {"mean": sum(accuracies) / 2, "min": min(accuracies), "max": max(accuracies)}
        assert [r["seed"] for r in a["runs"]] == [0, 1]
        for r in a["runs"]:
            assert {"seed", "final_train_loss", "test_loss", "test_accuracy", "curve", "diverged"} <= set(r)
            assert len(r["curve"]) == 100 and all(isinstance(v, float) for v in r["curve"])
    assert d["arms"][1]["applied"][0]["remedy"] == "clip"
    assert d["arms"][0]["applied"] == []
    assert d["best"] == "clip" and isinstance(d["helps"], bool)
    assert set(d["timing"]) >= {"seconds"}


def test_curve_is_bucketed_means() -> None:
    report = trial_of(small_mlp(), steps=7, lr=0.01)
    assert len(report.arms[0].curve) == 7  # fewer steps than points: one point per step


# ---------------------------------------------------------------------------------------------- divergence


def test_a_diverged_run_stops_and_is_never_best() -> None:
    model = small_mlp()
    huge = Suggestion(Remedy.REGULARIZE, ("0", "3"), Where.MODEL, {"penalty": "l2", "lambda": 1e30}, "test", ())
    report = trial_of(model, candidates={"regularize": (huge,), "clip": (clip(),)}, steps=50, batch_size=16)
    bad = report.arm("regularize").runs[0]
    assert bad.diverged and bad.steps_run < 50
    assert bad.test_loss is None and bad.test_accuracy is None and bad.final_train_loss is None
    assert bad.curve and math.isnan(bad.curve[-1])
    assert report.best == "clip"
    d = json.loads(render_trial_json(report))  # strict: NaN written as null
    assert d["arms"][1]["runs"][0]["curve"][-1] is None and d["arms"][1]["runs"][0]["diverged"] is True
    assert d["arms"][1]["diverged"] == 1 and d["arms"][1]["test_accuracy"] is None
    text = _terminal(report)
    assert "diverged at step" in text and "✗" in text
    only_bad = trial_of(model, candidates={"regularize": (huge,)}, steps=20, batch_size=16)
    assert only_bad.best is None and not only_bad.helps


def _run(name: str, acc: float | None, loss: float | None, diverged: bool = False) -> Arm:
    return Arm(name, (Run(name, loss, loss, acc, (), 10, diverged),))


def _seeds(name: str, *accuracies: float) -> Arm:
    return Arm(name, tuple(Run(name, 1.0, 1.0, a, (), 10, False, seed=k) for k, a in enumerate(accuracies)))


def test_verdict_margins() -> None:
    c = Task.CLASSIFICATION
    assert verdict([_run("none", 0.5, 1.0), _run("a", 0.56, 0.9)], c, TrialConfig()) == ("a", True)
    assert verdict([_run("none", 0.5, 1.0), _run("a", 0.54, 0.5)], c, TrialConfig()) == ("a", False)
    assert verdict([_run("none", 0.5, 1.0), _run("a", 0.9, 0.3), _run("b", 0.9, 0.2)], c, TrialConfig()) == ("b", True)
    assert verdict([_run("none", 0.5, 1.0), _run("a", None, None, True)], c, TrialConfig()) == (None, False)
    assert verdict([_run("none", None, None, True), _run("a", 0.1, 2.0)], c, TrialConfig()) == ("a", True)
    r = Task.REGRESSION
    assert verdict([_run("none", None, 1.0), _run("a", None, 0.89)], r, TrialConfig()) == ("a", True)
    assert verdict([_run("none", None, 1.0), _run("a", None, 0.95)], r, TrialConfig()) == ("a", False)


def test_verdict_over_seeds_needs_a_gap_beyond_the_spread() -> None:
    c, t = Task.CLASSIFICATION, TrialConfig()
    # worst treated seed above the best untreated one: helps
    assert verdict([_seeds("none", 0.5, 0.6, 0.55), _seeds("a", 0.66, 0.7, 0.68)], c, t) == ("a", True)
    # means 0.10 apart, but the seeds overlap and the gap is within the spread (0.4): does not clearly help
    assert verdict([_seeds("none", 0.3, 0.7, 0.5), _seeds("a", 0.45, 0.85, 0.5)], c, t) == ("a", False)
    # overlapping seeds but a gap wider than either spread: helps
    assert verdict([_seeds("none", 0.50, 0.60, 0.55), _seeds("a", 0.59, 0.70, 0.70)], c, t) == ("a", True)
    # the best mean wins the arm, a seed that diverged counts as 0 and puts the arm behind any arm without one
    diverging = Arm("b", (Run("b", 1.0, 1.0, 0.99, (), 10, False), Run("b", None, None, None, (), 3, True, seed=1)))
    assert verdict([_seeds("none", 0.1, 0.1), diverging, _seeds("a", 0.5, 0.6)], c, t) == ("a", True)
    assert diverging.scores(c) == [0.99, 0.0] and diverging.accuracy == Stat(0.99, 0.99, 0.99)


# ------------------------------------------------------------------------------------------------ data forms


def test_sequence_targets_and_regression() -> None:
    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.out = nn.Embedding(20, 8), nn.Linear(8, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.out(self.emb(x))  # (B, T, C)
            return logits

    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 20, (40, 6), generator=g)
    report = trial_of(Tagger(), data=(tokens, tokens % 5), steps=30, optimizer="adam", lr=0.05)
    accuracy = report.untreated.accuracy
    assert report.data.classes == 5 and accuracy is not None and accuracy.mean > 0.5

    x = torch.randn(60, 4, generator=g)
    y = x.sum(dim=1)  # float (B,) against a (B, 1) output: regression, MSE
    model = nn.Sequential(nn.Linear(4, 1))
    report = trial_of(model, data=(x.double(), y), steps=40, batch_size=16)
    assert report.data.task is Task.REGRESSION and report.data.loss == "mse"
    assert report.untreated.accuracy is None and report.untreated.test_loss.mean < 0.5  # type: ignore[union-attr]
    assert "Test acc" not in _terminal(report)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (torch.zeros(10, 3), "must return a pair"),
        ((torch.zeros(10, 3),), "tuple of length 1"),
        ((torch.zeros(10, 3), torch.zeros(9)), "10 inputs but 9 targets"),
        (([[0.0]] * 10, torch.zeros(10)), "inputs is a list"),
        ((torch.zeros(4, 3), torch.zeros(4)), "at least 5"),
        ((torch.full((10, 3), math.nan), torch.zeros(10)), "NaN or Inf"),
    ],
)
def test_bad_data_forms(data: Any, needle: str) -> None:
    with pytest.raises(ProbeError, match=None) as info:
        check_data(data, "dataset()")
    assert needle in str(info.value) and str(info.value).startswith("dataset()")


def test_targets_that_do_not_fit_the_output() -> None:
    x, _ = clusters()
    with pytest.raises(ProbeError, match="class labels outside 0..2"):
        trial_of(small_mlp(), data=(x, torch.arange(120) % 7))
    with pytest.raises(ProbeError, match="cross-entropy needs"):
        trial_of(small_mlp(), data=(x, torch.zeros(120, 2, dtype=torch.int64)))


def test_synthetic_task_is_learnable_and_refused_where_it_cannot_be_built() -> None:
    report = trial_of(small_mlp(inputs=16, classes=4), data=None, steps=100, optimizer="adam", batch_size=64)
    assert report.data.source == "synthetic" and report.data.classes == 4
    assert report.untreated.accuracy.min >= 0.9  # type: ignore[union-attr]
    x, y = synthetic_task(small_mlp(), None, seed=0, samples=1024)
    assert x.shape == (1024, 8) and y.dtype == torch.int64
    # token ids: the label is the class of the token TOKEN_LAG back (from the end, or from each position)
    classifier = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(128, 3))
    tokens, labels = synthetic_task(classifier, None, seed=0, samples=64)
    assert tokens.shape == (64, 32) and int(tokens.max()) < 10 and torch.equal(labels, tokens[:, 28] % 3)
    tagger = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 5))
    tokens, labels = synthetic_task(tagger, None, seed=0, samples=16)
    assert labels.shape == (16, 32) and torch.equal(labels[:, 10], tokens[:, 7] % 5)
    assert torch.equal(labels[:, 1], tokens[:, 0] % 5)
    with pytest.raises(ProbeError, match="token ids.*define dataset"):
        synthetic_task(small_mlp(), torch.zeros(2, 3, 8, dtype=torch.int64), seed=0, samples=64)
    with pytest.raises(ProbeError, match=r"outputs shape \(2, 1\).*define dataset"):
        synthetic_task(nn.Sequential(nn.Linear(4, 1)), None, seed=0, samples=64)


def test_apply_failure_is_one_clear_error() -> None:
    gone = Suggestion(Remedy.NORMALIZATION, ("missing",), Where.AFTER, {"norm": "BatchNorm1d"}, "test", ())
    with pytest.raises(ProbeError, match="cannot apply remedy normalization: .*'missing'"):
        trial_of(small_mlp(), candidates={"normalization": (gone,)})


def test_option_checks() -> None:
    assert parse_remedies("auto") == ("auto",)
    assert parse_remedies("Normalization, init") == ("normalization", "init")
    for bad, needle in (("foo", "'foo' is not a remedy"), ("auto,init", "stand alone"), ("", "empty")):
        with pytest.raises(ConfigError, match=needle):
            parse_remedies(bad)
    with pytest.raises(ConfigError, match="--steps 0"):
        trial_of(small_mlp(), steps=0)
    with pytest.raises(ConfigError, match="--optimizer"):
        trial_of(small_mlp(), steps=1, optimizer="lbfgs")


def test_sparkline() -> None:
    assert sparkline([0.0, 1.0], 2, 2, 0.0, 1.0) == "▁█"
    assert sparkline([1.0, 1.0, math.nan], 4, 4, 0.0, 1.0) == "██✗ "  # diverged: mark, then blank
    assert sparkline([0.0, 0.0, 1.0, 1.0], 4, 2, 0.0, 1.0) == "▁█"  # columns average their points


def _terminal(report: Any, width: int = 100) -> str:
    return render_text(lambda console: render_trial_terminal(report, console), width=width)


# ------------------------------------------------------------------------------------------------------ CLI


def trial_file(tmp_path: Path, data: str) -> Path:
    """A copy of the asset whose ``dataset()`` returns ``data`` instead of the clusters."""
    source = TRIAL_FILE.read_text(encoding="utf-8")
    assert source.count(DATA_LINE) == 1
    path = tmp_path / "model.py"
    path.write_text(source.replace(DATA_LINE, f"return {data}"), encoding="utf-8")
    return path


def trial(*args: str | Path) -> Outcome:
    return invoke("trial", *args)


@pytest.mark.slow  # trains every remedy
def test_cli_json_and_table(tmp_path: Path) -> None:
    path = TRIAL_FILE
    outcome = trial(
        path,
        "--steps",
        "20",
        "--batch-size",
        "16",
        "--remedy",
        "all",
        "--format",
        "json",
        "--model-kwargs",
        '{"depth": 12, "act": "sigmoid"}',
    )
    assert outcome.code == 0, outcome.stderr
    d = json.loads(outcome.stdout)
    assert d["schema"] == SCHEMA and d["data"]["source"] == "dataset" and d["target"] == str(path)
    assert d["arms"][0]["remedy"] == "none" and len(d["arms"]) > 2
    # --remedy all: every remedy is trained or named with the reason it was not
    from gradscope.trial import REMEDY_NAMES

    trained = {a["remedy"] for a in d["arms"]}
    left_out = {entry["remedy"]: entry["why"] for entry in d["not_trained"]}
    assert trained | set(left_out) == {"none", *REMEDY_NAMES} and not trained & set(left_out)
    assert "no vanilla nn.RNN" in left_out["gated-recurrent"]
    report_path = tmp_path / "out.txt"
    outcome = trial(path, "--steps", "10", "--remedy", "clip", "--output", report_path)
    assert outcome.code == 0 and outcome.stdout == "" and "report written" in outcome.stderr
    text = report_path.read_text(encoding="utf-8")
    assert "Trial" in text and "clip" in text and "Training loss" in text


def test_cli_healthy_model_trains_untreated_only() -> None:
    # enough steps for the untreated model to train (else every candidate is tried: planning.untrained)
    outcome = trial(TRIAL_FILE, "--steps", "150", "--format", "json")
    assert outcome.code == 0, outcome.stderr
    d = json.loads(outcome.stdout)
    assert [a["remedy"] for a in d["arms"]] == ["none"] and d["best"] is None and d["helps"] is False
    assert "healthy" in d["note"]


def test_cli_bad_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = TRIAL_FILE
    assert_one_line_error(trial(path, "--remedy", "magic"), "'magic' is not a remedy", "pseudo-norm", "normalization")
    assert_one_line_error(trial(path, "--steps", "0"), "--steps 0")
    assert_one_line_error(trial(path, "--lr", "-1"), "--lr -1")
    assert_one_line_error(
        trial(path, "--remedy", "activation"), "remedy activation does not apply to this model", "Sigmoid or Tanh"
    )
    assert_one_line_error(
        trial(path, "--remedy", "rescale", "--model-kwargs", '{"depth": 12, "act": "sigmoid"}'),
        "remedy rescale does not apply to this model",
    )
    for data, needle in (
        ("[1, 2, 3]", "returned a list of length 3"),
        ("torch.zeros(90, 8), torch.zeros(80)", "90 inputs but 80 targets"),
        ("torch.zeros(90, 8).tolist(), y", "inputs is a list"),
        ("torch.zeros(3, 8), y[:3]", "at least 5"),
        ("torch.zeros(90, 5), y", "forward failed at step 0 on dataset() inputs of shape (64, 5)"),
    ):
        assert_one_line_error(trial(trial_file(tmp_path, data), "--remedy", "none"), "dataset()", needle)

    import gradscope.trial.planning

    def vanished(*args: Any, **kwargs: Any) -> dict[str, tuple[Suggestion, ...]]:
        return {
            "normalization": (
                Suggestion(Remedy.NORMALIZATION, ("gone",), Where.AFTER, {"norm": "BatchNorm1d"}, "test", ()),
            )
        }

    monkeypatch.setattr(gradscope.trial.planning, "candidates", vanished)
    assert_one_line_error(
        trial(path, "--remedy", "normalization", "--steps", "5"),
        "cannot apply remedy normalization",
        "'gone'",
    )


def test_cli_seeds_and_identical_reruns() -> None:
    args = ("--steps", "8", "--remedy", "clip", "--seeds", "2", "--format", "json")
    first, second = trial(TRIAL_FILE, *args), trial(TRIAL_FILE, *args)
    assert first.code == 0, first.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["seeds"] == [0, 1] and a["init_varies"] is True
    assert all(len(arm["runs"]) == 2 for arm in a["arms"])
    assert without_timing(a) == without_timing(b)
    assert_one_line_error(trial(TRIAL_FILE, "--seeds", "0"), "--seeds 0")


@pytest.mark.slow
def test_cli_subprocess_json() -> None:
    proc = run_cli("trial", TRIAL_FILE, "--steps", "15", "--format", "json", "--remedy", "clip")
    assert proc.code == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["schema"] == SCHEMA and [a["remedy"] for a in d["arms"]] == ["none", "clip"]
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal


@pytest.mark.slow  # loads scikit-learn's digits, scans and trains
def test_a_best_run_far_from_trained_gets_a_caveat() -> None:
    model = deep_sigmoid()
    chosen = plan_for(model, ("normalization",))
    report = run_trial(
        model,
        data=digits(),
        candidates=chosen.selected,
        steps=5,
        optimizer="sgd",
        lr=None,
        seed=0,
        seeds=1,
        batch_size=64,
    )
    stat = report.arm(report.best).accuracy  # type: ignore[arg-type]
    assert stat is not None and stat.mean < 0.9
    accuracy = stat.mean
    assert report.caveat is not None and f"{accuracy:.2f}" in report.caveat
    assert report.to_dict()["caveat"] == report.caveat


class _Tagger(nn.Module):
    """Tokens → vanilla nn.RNN → a class at every step: a loss at every step keeps the scan's position profile flat."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.rnn = nn.RNN(8, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(x))
        y: torch.Tensor = self.head(out)
        return y


def test_auto_trains_the_gru_swap_for_a_vanilla_rnn_the_scan_calls_healthy() -> None:
    # benchmarks/repair.py, tuning half: every nn.RNN tagger on the hold-first task scanned healthy, failed untreated
    # and trained with the GRU swap; the swap is now a candidate for any vanilla nn.RNN, and auto trains it.
    torch.manual_seed(0)
    model = _Tagger()
    chosen = plan_for(model, ("auto",))
    assert chosen.report is not None and not chosen.report.findings
    assert list(chosen.selected) == ["gated-recurrent"] and "vanilla nn.RNN" in (chosen.note or "")
    assert chosen.selected["gated-recurrent"][0].layers == ("rnn",)
    healthy = plan_for(small_mlp(inputs=64), ("auto",))
    assert healthy.selected == {} and "healthy" in (healthy.note or "")


def test_vanishing_leads_with_forward_fixes_and_backward_only_ones_last() -> None:
    # benchmarks/repair.py, tuning half: under Adam pseudo-norm and rescale lost on every vanishing (not collapsed)
    # model (0.1-0.4 held-out vs 0.95-0.98 for normalization / init / the activation swap): Adam's per-parameter
    # step size undoes a constant gradient scale; under SGD pseudo-norm was the best arm nowhere (regimes.py).
    torch.manual_seed(0)
    hidden = [nn.Linear(64, 64) for _ in range(8)]
    for layer in hidden:  # a small fixed std: the signal shrinks at every layer without collapsing
        nn.init.normal_(layer.weight, 0.0, 0.01)
        nn.init.zeros_(layer.bias)
    model = nn.Sequential(*(m for layer in hidden for m in (layer, nn.ReLU())), nn.Linear(64, 10))
    orders = {}
    for opt in ("adam", "sgd"):
        config = Config().with_overrides({"diagnose.optimizer": opt})
        report = scan(model, build_probe(model, ModelFileHooks(), config), config=config)
        assert "vanishing_gradient" in {f.rule for f in report.findings}
        assert "forward_collapse" not in {f.rule for f in report.findings}
        orders[opt] = [s.remedy.option for s in report.suggestions]
    for order in orders.values():
        assert order[0] == "normalization" and "init" in order
        assert order.index("pseudo-norm") > order.index("init") and order.index("rescale") > order.index("init")
    # the trial's candidates keep that order (candidates() moves them last under Adam in every case)
    for opt in ("adam", "sgd"):
        config = Config().with_overrides({"diagnose.optimizer": opt})
        report = scan(model, build_probe(model, ModelFileHooks(), config), config=config)
        chosen = plan(model, report, ("auto",), config)
        names = list(chosen.selected)
        assert names.index("pseudo-norm") > max(names.index("normalization"), names.index("init"))


def test_a_healthy_scan_whose_trial_trains_nothing_gets_every_candidate() -> None:
    # benchmarks/repair.py, tuning half: deep nets the scan called healthy stayed far below trained untreated
    # (sgd_tanh_cnn_d10: 0.19 held-out); trial_target then trains every candidate but clip.
    from gradscope.trial import untrained

    healthy = plan_for(small_mlp(inputs=64), ("auto",))
    assert healthy.healthy and healthy.selected == {}
    again = untrained(healthy, 0.3)
    assert again is not None and again.selected and "clip" not in again.selected
    assert set(again.selected) <= set(healthy.available) and "trained_accuracy" in (again.note or "")
    assert untrained(healthy, 0.95) is None and untrained(healthy, None) is None
    sick = plan_for(deep_sigmoid(), ("auto",))
    assert not sick.healthy and untrained(sick, 0.1) is None


def test_a_very_deep_vanishing_stack_under_adam_leads_with_skip_connections() -> None:
    # benchmarks/repair.py, tuning half: at 20-60 tanh layers (vanishing, not collapsed) skip connections won in 3 of
    # 4 stacks under Adam; at depth 8 (the test above) normalization leads.
    from gradscope.advice import RESIDUAL_FIRST_DEPTH

    torch.manual_seed(0)
    depth = RESIDUAL_FIRST_DEPTH
    model = nn.Sequential(*(m for _ in range(depth) for m in (nn.Linear(64, 64), nn.Tanh())), nn.Linear(64, 10))
    for layer in model[:-1:2]:  # zero biases: the signal shrinks without collapsing onto the biases
        nn.init.zeros_(layer.bias)
    config = Config().with_overrides({"diagnose.optimizer": "adam"})
    pixels = ModelFileHooks(example_inputs=lambda: torch.rand(16, 64))  # digits-like inputs in [0, 1]
    report = scan(model, build_probe(model, pixels, config), config=config)
    rules = {f.rule for f in report.findings}
    assert "vanishing_gradient" in rules and "forward_collapse" not in rules
    order = [s.remedy.option for s in report.suggestions]
    assert order[0] == "residual" and order.index("pseudo-norm") > order.index("normalization")
    assert list(plan(model, report, ("auto",), config).selected)[0] == "residual"
