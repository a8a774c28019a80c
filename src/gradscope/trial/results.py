"""What a trial found: each run's numbers, the best remedy and whether it helps. No torch here."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..config import TrialConfig
from ..display import Displayable
from ..results import Suggestion, json_safe, suggestion_dict
from ..vocab import Optimizer

SCHEMA = "gradscope.trial/2"
TOKEN_LAG = 3  # the synthetic token task's label is the token this many positions back


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


@dataclass(frozen=True)
class DataInfo:
    source: str  # "dataset" | "synthetic" (class clusters) | "synthetic_tokens" (the token TOKEN_LAG back)
    train: int
    test: int
    task: Task
    classes: int | None  # output classes (classification only)
    loss: str  # "cross_entropy" | "mse"


@dataclass(frozen=True)
class Run:
    """One arm trained with one seed."""

    remedy: str
    final_train_loss: float | None
    test_loss: float | None
    test_accuracy: float | None  # None without classes, or when diverged
    curve: tuple[float, ...]  # bucketed training loss (see the module docstring); NaN where non-finite
    steps_run: int
    diverged: bool
    applied: tuple[Suggestion, ...] = ()
    skipped: tuple[tuple[Suggestion, str], ...] = ()
    seconds: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "diverged": self.diverged,
            "steps_run": self.steps_run,
            "final_train_loss": self.final_train_loss,
            "test_loss": self.test_loss,
            "test_accuracy": self.test_accuracy,
            "curve": list(self.curve),
        }


@dataclass(frozen=True)
class Stat:
    """Mean, smallest and largest value over the seeds that finished."""

    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat | None:
        finite = [v for v in values if v is not None and math.isfinite(v)]
        if not finite:
            return None
        return cls(math.fsum(finite) / len(finite), min(finite), max(finite))

    @property
    def spread(self) -> float:
        return self.max - self.min

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "min": self.min, "max": self.max}


@dataclass(frozen=True)
class Arm:
    """One remedy (or the untreated model), trained once per seed from that seed's init."""

    remedy: str
    runs: tuple[Run, ...]  # in seed order

    @property
    def applied(self) -> tuple[Suggestion, ...]:
        return self.runs[0].applied

    @property
    def skipped(self) -> tuple[tuple[Suggestion, str], ...]:
        return self.runs[0].skipped

    @property
    def diverged(self) -> int:
        """How many seeds diverged."""
        return sum(r.diverged for r in self.runs)

    @property
    def accuracy(self) -> Stat | None:
        return Stat.of([r.test_accuracy for r in self.runs if not r.diverged])

    @property
    def test_loss(self) -> Stat | None:
        return Stat.of([r.test_loss for r in self.runs if not r.diverged])

    @property
    def train_loss(self) -> Stat | None:
        return Stat.of([r.final_train_loss for r in self.runs if not r.diverged])

    @property
    def curve(self) -> tuple[float, ...]:
        """The training loss averaged over the seeds, point by point; it ends where the first seed diverged."""
        length = min(len(r.curve) for r in self.runs)
        points = []
        for i in range(length):
            values = [r.curve[i] for r in self.runs]
            points.append(math.fsum(values) / len(values) if all(math.isfinite(v) for v in values) else math.nan)
        return tuple(points)

    def scores(self, task: Task) -> list[float]:
        """Per seed, what the verdict compares: accuracy (a diverged seed counts 0), or held-out loss (∞)."""
        if task is Task.CLASSIFICATION:
            return [0.0 if r.diverged else (r.test_accuracy or 0.0) for r in self.runs]
        return [math.inf if r.diverged or r.test_loss is None else r.test_loss for r in self.runs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "remedy": self.remedy,
            "diverged": self.diverged,
            "test_accuracy": _stat(self.accuracy),
            "test_loss": _stat(self.test_loss),
            "final_train_loss": _stat(self.train_loss),
            "applied": [suggestion_dict(s) for s in self.applied],
            "skipped": [{**suggestion_dict(s), "why": why} for s, why in self.skipped],
            "runs": [r.to_dict() for r in self.runs],
        }


def _stat(stat: Stat | None) -> dict[str, float] | None:
    return None if stat is None else stat.to_dict()


@dataclass(frozen=True)
class TrialReport(Displayable):
    steps: int
    optimizer: Optimizer
    lr: float
    seeds: tuple[int, ...]
    batch_size: int
    data: DataInfo
    arms: tuple[Arm, ...]  # the untreated model first
    best: str | None  # a remedy name, never "none"; None when no remedy run finished
    helps: bool
    target: str | None = None
    note: str | None = None  # e.g. why only the untreated model was trained
    timing: Mapping[str, Any] = field(default_factory=dict)
    thresholds: TrialConfig = field(default_factory=TrialConfig)  # what "helps" and "trained" mean
    init_varies: bool = True  # whether the seeds drew new initial weights (else: minibatch order and dropout only)
    not_trained: tuple[tuple[str, str], ...] = ()  # --remedy all: the remedies left out, and why

    @property
    def caveat(self) -> str | None:
        """Said when even the best arm is far from a trained classifier: "helps" only means "beats untreated"."""
        if self.data.task is not Task.CLASSIFICATION or self.best is None:
            return None
        accuracy = self.arm(self.best).accuracy
        if accuracy is None or accuracy.mean >= self.thresholds.trained_accuracy:
            return None
        return (
            f"even the best remedy reaches only {accuracy.mean:.2f} held-out accuracy after {self.steps} steps: "
            f"no remedy that can be applied in memory trains this model in this budget; try more --steps, or the "
            f"remedies that need a code change (residual blocks) listed by gradscope scan"
        )

    @property
    def untreated(self) -> Arm:
        return self.arms[0]

    @property
    def margin(self) -> str:
        """What "helps" means for this task, in words."""
        return margin_text(self.data.task, self.thresholds, len(self.seeds))

    def arm(self, remedy: str) -> Arm:
        for a in self.arms:
            if a.remedy == remedy:
                return a
        raise KeyError(remedy)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = json_safe(
            {
                "schema": SCHEMA,
                "target": self.target,
                "steps": self.steps,
                "optimizer": self.optimizer.value,
                "lr": self.lr,
                "seeds": list(self.seeds),
                "init_varies": self.init_varies,
                "batch_size": self.batch_size,
                "data": {
                    "source": self.data.source,
                    "train": self.data.train,
                    "test": self.data.test,
                    "task": self.data.task.value,
                    "classes": self.data.classes,
                    "loss": self.data.loss,
                },
                "arms": [a.to_dict() for a in self.arms],
                "not_trained": [{"remedy": name, "why": why} for name, why in self.not_trained],
                "best": self.best,
                "helps": self.helps,
                "margin": self.margin,
                "note": self.note,
                "caveat": self.caveat,
                "timing": dict(self.timing),
            }
        )
        return data


def margin_text(task: Task, thresholds: TrialConfig, seeds: int = 1) -> str:
    beyond = " beyond the seed spread" if seeds > 1 else ""
    if task is Task.CLASSIFICATION:
        return f"mean held-out accuracy at least {thresholds.helps_accuracy:g} above the untreated model's{beyond}"
    return f"mean held-out loss at least {thresholds.helps_loss_ratio:.0%} below the untreated model's{beyond}"


def verdict(arms: Sequence[Arm], task: Task, thresholds: TrialConfig) -> tuple[str | None, bool]:
    """The best remedy (never the untreated model; an arm that diverged on some seed only when all did; equal
    accuracies go to the lower held-out loss, then to the earlier candidate) and
    whether it helps: its mean clears the margin over the untreated mean, and the gap is real — its worst seed
    beats the untreated best seed, or the gap of the means exceeds both arms' seed spread."""
    untreated, treated = arms[0], [a for a in arms[1:] if a.diverged < len(a.runs)]
    if not treated:
        return None, False
    classes = task is Task.CLASSIFICATION

    def mean(values: list[float]) -> float:
        return math.inf if any(math.isinf(v) for v in values) else math.fsum(values) / len(values)

    def key(a: Arm) -> tuple[int, float, float]:
        score = mean(a.scores(task))
        loss = a.test_loss.mean if a.test_loss is not None else math.inf  # ties in accuracy: the lower loss
        return (a.diverged, -score, loss) if classes else (a.diverged, score, 0.0)

    best = min(treated, key=key)  # min keeps the first of equals: the earlier candidate wins a tie
    if best.diverged:
        return best.remedy, False
    ours, theirs = best.scores(task), untreated.scores(task)
    if untreated.diverged == len(untreated.runs):
        return best.remedy, True
    spread = max(max(ours) - min(ours), max(theirs) - min(theirs))
    if classes:
        gain = mean(ours) - mean(theirs)
        clear = gain >= thresholds.helps_accuracy - 1e-12
        real = min(ours) > max(theirs) or gain > spread
    else:
        if math.isinf(mean(theirs)):  # some untreated seeds diverged, none of ours
            return best.remedy, True
        gain = mean(theirs) - mean(ours)
        clear = mean(ours) <= (1 - thresholds.helps_loss_ratio) * mean(theirs)
        real = max(ours) < min(theirs) or gain > spread
    return best.remedy, bool(clear and real)
