"""What a trial found: each run's numbers, the best remedy and whether it helps. No torch here."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..config import TrialConfig
from ..results import Suggestion, json_safe, suggestion_dict
from ..vocab import Optimizer

SCHEMA = "gradscope.trial/1"


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


@dataclass(frozen=True)
class DataInfo:
    source: str  # "dataset" | "synthetic"
    train: int
    test: int
    task: Task
    classes: int | None  # output classes (classification only)
    loss: str  # "cross_entropy" | "mse"


@dataclass(frozen=True)
class Run:
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "remedy": self.remedy,
            "diverged": self.diverged,
            "steps_run": self.steps_run,
            "final_train_loss": self.final_train_loss,
            "test_loss": self.test_loss,
            "test_accuracy": self.test_accuracy,
            "curve": list(self.curve),
            "applied": [suggestion_dict(s) for s in self.applied],
            "skipped": [{**suggestion_dict(s), "why": why} for s, why in self.skipped],
        }


@dataclass(frozen=True)
class TrialReport:
    steps: int
    optimizer: Optimizer
    lr: float
    seed: int
    batch_size: int
    data: DataInfo
    runs: tuple[Run, ...]  # the untreated run first
    best: str | None  # a remedy name, never "none"; None when no remedy run finished
    helps: bool
    target: str | None = None
    note: str | None = None  # e.g. why only the untreated model was trained
    timing: Mapping[str, Any] = field(default_factory=dict)
    thresholds: TrialConfig = field(default_factory=TrialConfig)  # what "helps" and "trained" mean

    @property
    def caveat(self) -> str | None:
        """Said when even the best run is far from a trained classifier: "helps" only means "beats untreated"."""
        if self.data.task is not Task.CLASSIFICATION or self.best is None:
            return None
        accuracy = self.run(self.best).test_accuracy
        if accuracy is None or accuracy >= self.thresholds.trained_accuracy:
            return None
        return (
            f"even the best run reaches only {accuracy:.2f} held-out accuracy after {self.steps} steps: no "
            f"remedy that can be applied in memory trains this model in this budget; try more --steps, or the "
            f"remedies that need a code change (residual blocks) listed by gradscope scan"
        )

    @property
    def untreated(self) -> Run:
        return self.runs[0]

    @property
    def margin(self) -> str:
        """What "helps" means for this task, in words."""
        return margin_text(self.data.task, self.thresholds)

    def run(self, remedy: str) -> Run:
        for r in self.runs:
            if r.remedy == remedy:
                return r
        raise KeyError(remedy)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = json_safe(
            {
                "schema": SCHEMA,
                "target": self.target,
                "steps": self.steps,
                "optimizer": self.optimizer.value,
                "lr": self.lr,
                "seed": self.seed,
                "batch_size": self.batch_size,
                "data": {
                    "source": self.data.source,
                    "train": self.data.train,
                    "test": self.data.test,
                    "task": self.data.task.value,
                    "classes": self.data.classes,
                    "loss": self.data.loss,
                },
                "runs": [r.to_dict() for r in self.runs],
                "best": self.best,
                "helps": self.helps,
                "margin": self.margin,
                "note": self.note,
                "caveat": self.caveat,
                "timing": dict(self.timing),
            }
        )
        return data


def margin_text(task: Task, thresholds: TrialConfig) -> str:
    if task is Task.CLASSIFICATION:
        return f"held-out accuracy at least {thresholds.helps_accuracy:g} above the untreated run's"
    return f"held-out loss at least {thresholds.helps_loss_ratio:.0%} below the untreated run's"


def verdict(runs: Sequence[Run], task: Task, thresholds: TrialConfig) -> tuple[str | None, bool]:
    """The best remedy (never the untreated run, never a diverged one) and whether it clears the margin."""
    untreated, treated = runs[0], [r for r in runs[1:] if not r.diverged]
    if not treated:
        return None, False

    def key(r: Run) -> tuple[float, float]:
        loss = r.test_loss if r.test_loss is not None and math.isfinite(r.test_loss) else math.inf
        if task is Task.CLASSIFICATION:
            return (-(r.test_accuracy or 0.0), loss)
        return (loss, 0.0)

    best = min(treated, key=key)  # min keeps the first of equals: the earlier candidate wins a tie
    if untreated.diverged:
        return best.remedy, True
    if task is Task.CLASSIFICATION:
        helps = (best.test_accuracy or 0.0) >= (untreated.test_accuracy or 0.0) + thresholds.helps_accuracy - 1e-12
    else:
        ours, theirs = best.test_loss, untreated.test_loss
        helps = (
            ours is not None
            and theirs is not None
            and math.isfinite(ours)
            and (not math.isfinite(theirs) or ours <= (1 - thresholds.helps_loss_ratio) * theirs)
        )
    return best.remedy, bool(helps)
