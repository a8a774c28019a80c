"""``trial``: prove a remedy by training. Copies of one model, from the same weights, are trained untreated
(``none``) and with each candidate remedy for the same steps on the same minibatches; the held-out numbers say
which remedy helps, and by how much.

Decisions (README, "gradscope trial"):

- **Data.** The model file's ``dataset()`` → ``(inputs, targets)``, two tensors with the same first dimension
  and at least ``MIN_SAMPLES`` rows. Integer targets mean classes: cross-entropy for outputs ``(B, C)`` with
  targets ``(B,)`` or ``(B, T, C)`` with ``(B, T)``. Float targets mean regression: mean squared error against
  an output of the target's shape (or the same number of elements per sample). Without ``dataset()``: a
  synthetic task of ``SYNTHETIC_SAMPLES`` samples — C Gaussian class clusters (C = the model's output classes)
  in the input shape the probe inference gives, class means and noise both N(0, 1) per element, scaled by 1/√2
  so the inputs have unit variance; for inputs with channels (``(C, L)``, ``(C, H, W)``, …) half of each class
  mean's variance is a per-channel level, so the classes survive global average pooling. The classes are far
  apart, so a healthy model learns them quickly (≥ 0.98 held-out accuracy in 100 steps for a small MLP).
- **Split.** A seeded permutation; the last ``TEST_FRACTION`` (at least one sample) is held out.
- **Minibatches.** Consecutive chunks of a stream of seeded permutations of the training indices: every batch
  has ``batch_size`` samples (capped at the training-set size) and every run sees exactly the same batches.
- **Optimizer.** ``sgd`` (plain, lr 0.1) or ``adam`` (lr 1e-3, torch defaults otherwise). A remedy's penalty
  (``Patched.penalty()``) is added to the loss; its ``clip_norm`` clips the global gradient norm before the
  step.
- **Divergence.** A non-finite training loss stops the run; it is reported as diverged, with no held-out
  numbers, and is never the best.
- **Numbers.** ``final_train_loss`` and the held-out numbers are measured after training, in eval mode, over
  the whole training / held-out set. The curve is the per-step training loss, averaged over at most
  ``CURVE_POINTS`` equal buckets of the requested steps (point i covers steps ⌊i·N/P⌋ … ⌊(i+1)·N/P⌋−1), so
  point i means the same steps in every run (6 significant digits); a diverged run's curve stops at the bucket
  where the loss became non-finite (null).
- **Verdict.** The best remedy is the non-diverged one with the highest held-out accuracy (the lowest held-out
  loss without classes; ties go to the lower held-out loss, then to the earlier candidate). It helps when its
  accuracy beats the untreated run's by at least ``HELPS_ACCURACY`` (absolute), or, without classes, when its
  held-out loss is at least ``HELPS_LOSS_RATIO`` lower; or when the untreated run diverged and it did not.
- **State.** The caller's model is never modified (remedies are applied to deep copies); the global RNG is
  forked and seeded per run (dropout draws the same masks in every run) and put back afterwards. Same seed,
  same numbers.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor, nn

from . import probes
from .config import Config
from .errors import ConfigError, GradscopeError, ProbeError
from .loading import ModelFileHooks
from .remedies.apply import Options, Patched, apply
from .remedies.pseudonorm import reference_scale
from .results import Remedy, Report, Severity, Suggestion, json_safe, suggestion_dict

SCHEMA = "gradscope.trial/1"

UNTREATED = "none"
REMEDY_NAMES: tuple[str, ...] = (
    "pseudo-norm",
    "rescale",
    "regularize",
    "activation",
    "normalization",
    "init",
    "clip",
)
SELECTORS: tuple[str, ...] = ("auto", UNTREATED, *REMEDY_NAMES, "all")

DEFAULT_STEPS = 300
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3}
TEST_FRACTION = 0.2
MIN_SAMPLES = 5
SYNTHETIC_SAMPLES = 1024
CURVE_POINTS = 100
HELPS_ACCURACY = 0.05  # absolute held-out accuracy over the untreated run
HELPS_LOSS_RATIO = 0.10  # relative held-out loss reduction, when there are no classes
TRAINED_ACCURACY = 0.90  # below this the best run gets a caveat: it beats untreated but is not trained
EVAL_CHUNK = 512  # samples per forward when measuring (bounds memory on large held-out sets)
_DIVERGENCE_CHECK = 10  # steps between host reads of the losses (one sync per check, not per step)

Progress = Callable[[str, int, int], None]  # (remedy, steps done over all runs, total steps over all runs)


class Optimizer(StrEnum):
    sgd = "sgd"
    adam = "adam"


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


# ------------------------------------------------------------------------------------------------ results


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

    @property
    def caveat(self) -> str | None:
        """Said when even the best run is far from a trained classifier: "helps" only means "beats untreated"."""
        if self.data.task is not Task.CLASSIFICATION or self.best is None:
            return None
        accuracy = self.run(self.best).test_accuracy
        if accuracy is None or accuracy >= TRAINED_ACCURACY:
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
        return margin_text(self.data.task)

    def run(self, remedy: str) -> Run:
        for r in self.runs:
            if r.remedy == remedy:
                return r
        raise KeyError(remedy)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {  # type: ignore[no-any-return]
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


def margin_text(task: Task) -> str:
    if task is Task.CLASSIFICATION:
        return f"held-out accuracy at least {HELPS_ACCURACY:g} above the untreated run's"
    return f"held-out loss at least {HELPS_LOSS_RATIO:.0%} below the untreated run's"


# ----------------------------------------------------------------------------------- planning (target → runs)


@dataclass(frozen=True)
class Plan:
    """What a trial will train: the selected candidates (by CLI name, in order), and why."""

    selected: dict[str, tuple[Suggestion, ...]]
    available: dict[str, tuple[Suggestion, ...]]
    report: Report | None  # the scan behind the candidates; None for --remedy none
    note: str | None = None


def parse_remedies(text: str) -> tuple[str, ...]:
    """``--remedy``: one selector, or a comma-separated list of remedy names; ConfigError otherwise."""
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    if not names:
        raise ConfigError(f"--remedy is empty; choose from {', '.join(SELECTORS)}")
    for name in names:
        if name not in SELECTORS:
            raise ConfigError(f"--remedy {name!r} is not a remedy; choose from {', '.join(SELECTORS)}")
    if len(names) > 1 and set(names) & {"auto", "all", UNTREATED}:
        raise ConfigError(
            "--remedy auto, all and none stand alone; list remedy names with commas instead, "
            "e.g. --remedy normalization,init"
        )
    return names


def plan(
    model: nn.Module,
    hooks: ModelFileHooks,
    remedies: Sequence[str],
    *,
    seed: int = 0,
    config: Config | None = None,
    target: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Plan:
    """Scan ``model`` with the ``gradscope scan`` probe defaults (seeded by ``seed``) and pick the candidates.

    ``auto``: every candidate when the scan has a warning or error finding (info findings such as frozen
    layers ask for no remedy), except ``clip`` unless the scan itself suggested it (clipping does nothing to
    gradients that are too small); with no such finding only the untreated model is trained. ``all``: every
    candidate. ``none``: no scan, the untreated run only. Names: each must be a candidate, else ConfigError
    saying why not.
    """
    from .advice import candidates
    from .results import Remedy
    from .scanner import scan

    if tuple(remedies) == (UNTREATED,):
        return Plan({}, {}, None, "trained the untreated model only (--remedy none)")
    config = config or Config()
    config = config.with_overrides({"probe.seed": seed})
    device = _device_of(model)
    p = config.probe
    batches = probes.build_batches(
        model,
        hooks,
        n=p.batches,
        batch_size=p.batch_size,
        seed=p.seed,
        device=device,
        seq_len=p.seq_len,
        image_size=p.image_size,
    )
    report = scan(model, batches, loss_fn=hooks.loss_fn, config=config, target=target, progress=progress)
    modules = dict(model.named_modules())
    available = candidates(report.layers, modules, report.suggestions, config)
    if tuple(remedies) == ("all",):
        return Plan(dict(available), available, report)
    if tuple(remedies) == ("auto",):
        problems = [f for f in report.findings if f.severity.rank >= Severity.WARNING.rank]
        if not problems:
            healthy = (
                "the scan found no problems: the model is healthy, so only the untreated model was "
                "trained (use --remedy all to try the remedies anyway)"
            )
            return Plan({}, available, report, healthy)
        suggested = {s.remedy for s in report.suggestions}
        # Clipping alone only when the scan suggested it and did not already pair it with the remedy it belongs to.
        paired = any(len(group) > 1 for group in available.values())
        chosen = {
            name: s for name, s in available.items() if name != "clip" or (Remedy.CLIP in suggested and not paired)
        }
        rules = ", ".join(dict.fromkeys(f.rule for f in problems))
        return Plan(chosen, available, report, f"the scan found {rules}")
    selected: dict[str, tuple[Suggestion, ...]] = {}
    for name in remedies:
        if name not in available:
            why = _why_not(name, report, modules)
            raise ConfigError(f"remedy {name} does not apply to this model: {why}")
        selected[name] = available[name]
    return Plan(selected, available, report)


def _why_not(name: str, report: Report, modules: Mapping[str, nn.Module]) -> str:
    rules = {f.rule for f in report.findings if f.severity.rank >= Severity.WARNING.rank}
    weighted = [
        layer
        for layer in report.layers
        if layer.trainable and isinstance(modules.get(layer.name), (nn.Linear, nn.modules.conv._ConvNd))
    ]
    if name in ("pseudo-norm", "rescale"):
        if "forward_collapse" in rules:
            return (
                "the forward signal has collapsed (forward_collapse), and a backward-only fix cannot "
                "bring it back, so the scan offers none; try normalization or init"
            )
        if "vanishing_gradient" not in rules:
            return f"no layer's gradient is vanishing, so there is nothing to restore ({_verdict(report)})"
        if name == "pseudo-norm":
            return (
                "the measured backward signal never falls below suggest.pseudo_norm_min_ratio between "
                "layers, so there is nowhere to put one"
            )
        return "no layer's gradient is below diagnose.vanishing_warning of the reference, so there is no gain to set"
    if name == "activation":
        return "it has no Sigmoid or Tanh modules to replace"
    if name in ("normalization", "init", "regularize") and not weighted:
        return "it has no trainable Linear or Conv layers to act on"
    return f"the scan offers no {name} candidate ({_verdict(report)})"


def _verdict(report: Report) -> str:
    problems = [f.rule for f in report.findings if f.severity.rank >= Severity.WARNING.rank]
    return "the scan found no problems" if not problems else "scan: " + ", ".join(dict.fromkeys(problems))


# ---------------------------------------------------------------------------------------------------- data


def dataset_from(hooks: ModelFileHooks) -> tuple[Tensor, Tensor] | None:
    """Call the model file's ``dataset()`` and check its form; None when the file has none."""
    if hooks.dataset is None:
        return None
    try:
        data = hooks.dataset()
    except GradscopeError:
        raise
    except Exception as exc:
        raise ProbeError(f"dataset() raised {_describe(exc)}") from None
    return check_data(data, "dataset()")


def check_data(data: Any, label: str = "data") -> tuple[Tensor, Tensor]:
    """``(inputs, targets)``: two tensors, same first dimension, at least MIN_SAMPLES rows, finite inputs."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        kind = (
            f"a {type(data).__name__} of length {len(data)}"
            if isinstance(data, (tuple, list))
            else f"a {type(data).__name__}"
        )
        raise ProbeError(f"{label} returned {kind}; it must return a pair (inputs, targets) of tensors")
    inputs, targets = data
    for what, value in (("inputs", inputs), ("targets", targets)):
        if not isinstance(value, Tensor):
            raise ProbeError(
                f"{label} {what} is a {type(value).__name__}; return torch tensors "
                "(e.g. torch.tensor(x, dtype=torch.float32))"
            )
        if value.dim() == 0:
            raise ProbeError(f"{label} {what} is a 0-d tensor; the first dimension must index the samples")
    if inputs.shape[0] != targets.shape[0]:
        raise ProbeError(
            f"{label} returned {inputs.shape[0]} inputs but {targets.shape[0]} targets; the first dimensions must match"
        )
    if inputs.shape[0] < MIN_SAMPLES:
        raise ProbeError(
            f"{label} returned {inputs.shape[0]} sample(s); a trial needs at least "
            f"{MIN_SAMPLES} (one fifth is held out)"
        )
    if targets.dtype == torch.bool or targets.is_complex():
        raise ProbeError(f"{label} targets are {targets.dtype}; use int64 class labels or float regression targets")
    for what, value in (("inputs", inputs), ("targets", targets)):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ProbeError(f"{label} {what} contain NaN or Inf values; return finite data")
    return inputs, targets


def synthetic_task(
    model: nn.Module, hooks: ModelFileHooks, *, seed: int, samples: int = SYNTHETIC_SAMPLES
) -> tuple[Tensor, Tensor]:
    """Gaussian class clusters in the model's inferred input shape (see the module docstring).

    Raises ProbeError (advising ``dataset()``) when the model does not take one float tensor or does not
    output ``(B, C)`` logits with C ≥ 2."""
    advice = "define dataset() in the model file returning (inputs, targets) tensors"
    try:
        batch = probes.build_batches(
            model,
            ModelFileHooks(example_inputs=hooks.example_inputs),
            n=1,
            batch_size=2,
            seed=seed,
            device=_device_of(model),
        )[0]
    except ProbeError as exc:
        raise ProbeError(f"no dataset() and no synthetic task for this model ({exc}); {advice}") from None
    if not isinstance(batch, Tensor) or not batch.is_floating_point():
        kind = f"{batch.dtype} tensor" if isinstance(batch, Tensor) else type(batch).__name__
        raise ProbeError(
            f"no dataset() in the model file, and the synthetic task needs one float input "
            f"tensor; this model takes a {kind} (e.g. token ids): {advice}"
        )
    try:
        with torch.no_grad(), _kept_mode(model):
            model.eval()
            out = _output(probes.call_model(model, batch))
    except ProbeError:
        raise
    except Exception as exc:
        raise ProbeError(
            f"the model's forward failed on a synthetic batch of shape {tuple(batch.shape)} "
            f"({_describe(exc)}); {advice}"
        ) from None
    if out.dim() != 2 or out.shape[1] < 2:
        raise ProbeError(
            f"no dataset() in the model file, and the synthetic task needs (batch, classes) "
            f"logits; this model outputs shape {tuple(out.shape)}: {advice}"
        )
    classes = int(out.shape[1])
    sample_shape = tuple(batch.shape[1:])
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn((classes, *sample_shape), generator=generator)
    if len(sample_shape) >= 2:  # (channels, *spatial): a per-channel level survives global pooling
        level = torch.randn((classes, sample_shape[0], *([1] * (len(sample_shape) - 1))), generator=generator)
        means = (means + level) / math.sqrt(2.0)
    labels = torch.randint(0, classes, (samples,), generator=generator)
    noise = torch.randn((samples, *sample_shape), generator=generator)
    inputs = ((means[labels] + noise) / math.sqrt(2.0)).to(batch.dtype)
    return inputs, labels


# --------------------------------------------------------------------------------------------------- trial


def run_trial(
    model: nn.Module,
    *,
    data: tuple[Tensor, Tensor] | None,
    candidates: Mapping[str, tuple[Suggestion, ...]],
    steps: int,
    optimizer: str,
    lr: float | None,
    seed: int,
    batch_size: int,
    pseudo_norm_kwargs: dict[str, Any] | None = None,
    progress: Progress | None = None,
    hooks: ModelFileHooks | None = None,
    target: str | None = None,
    note: str | None = None,
) -> TrialReport:
    """Train ``model`` untreated and with each candidate for ``steps`` steps; return the comparison.

    ``data``: ``(inputs, targets)``; None builds the synthetic task (``hooks.example_inputs`` is used for the
    input shape when given). Never prints; leaves ``model`` and the global RNG as they were.
    """
    started = time.perf_counter()
    opt = _optimizer(optimizer)
    if steps < 1:
        raise ConfigError(f"--steps {steps}: must be at least 1")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be at least 1")
    rate = DEFAULT_LR[opt.value] if lr is None else float(lr)
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"--lr {lr}: must be a finite number > 0")
    if UNTREATED in candidates:
        raise ConfigError(f"'{UNTREATED}' is the untreated run, always trained first; it is not a candidate")
    if not isinstance(model, nn.Module) or not any(p.requires_grad for p in model.parameters()):
        raise ProbeError("trial needs a torch.nn.Module with trainable parameters")
    device = _device_of(model)
    source = "dataset"
    if data is None:
        data = synthetic_task(model, hooks or ModelFileHooks(), seed=seed)
        source = "synthetic"
    inputs, targets = check_data(data)
    inputs = _cast_inputs(inputs, model).to(device)
    targets = targets.to(device)
    split = _split(inputs.shape[0], seed)
    train_idx, test_idx = split
    batch = min(batch_size, int(train_idx.numel()))
    order = _batch_order(train_idx, batch, steps, seed)
    task = Task.CLASSIFICATION if not targets.is_floating_point() else Task.REGRESSION

    pseudo_norm_kwargs = dict(pseudo_norm_kwargs or {})
    if "scale" not in pseudo_norm_kwargs:
        scale = _pseudo_norm_scale(model, candidates, inputs[order[0]], targets[order[0]], task, source, device, seed)
        if scale is not None:
            pseudo_norm_kwargs["scale"] = scale
    names = [UNTREATED, *candidates]
    total = steps * len(names)
    runs: list[Run] = []
    classes: int | None = None
    for i, name in enumerate(names):
        suggestions = candidates.get(name, ())
        run_started = time.perf_counter()

        def tick(step: int, _i: int = i, _name: str = name) -> None:
            if progress is not None:
                progress(_name, _i * steps + step, total)

        with _forked_rng(device, seed):
            try:
                patched = apply(model, suggestions, Options(pseudo_norm_kwargs=pseudo_norm_kwargs, seed=seed))
            except GradscopeError as exc:
                raise ProbeError(f"cannot apply remedy {name}: {exc}") from None
            except Exception as exc:
                raise ProbeError(f"cannot apply remedy {name}: {_describe(exc)}") from None
            losses, diverged = _train(patched, name, inputs, targets, order, task, opt, rate, tick, source)
            final_train = test_loss = accuracy = None
            try:  # training ran forward already; eval mode can still differ (a model that branches on it)
                if i == 0:
                    classes = _classes(patched, inputs, task)
                if not diverged:
                    final_train, _ = _evaluate(patched, inputs, targets, train_idx, task)
                    test_loss, accuracy = _evaluate(patched, inputs, targets, test_idx, task)
            except GradscopeError:
                raise
            except Exception as exc:
                raise ProbeError(f"run {name}: evaluation in eval mode failed: {_describe(exc)}") from None
        tick(steps)
        runs.append(
            Run(
                remedy=name,
                final_train_loss=final_train,
                test_loss=test_loss,
                test_accuracy=accuracy,
                curve=_bucketed(losses, steps),
                steps_run=len(losses),
                diverged=diverged,
                applied=tuple(patched.applied),
                skipped=tuple(patched.skipped),
                seconds=round(time.perf_counter() - run_started, 3),
            )
        )
    best, helps = verdict(runs, task)
    info = DataInfo(
        source,
        int(train_idx.numel()),
        int(test_idx.numel()),
        task,
        classes,
        "cross_entropy" if task is Task.CLASSIFICATION else "mse",
    )
    return TrialReport(
        steps=steps,
        optimizer=opt,
        lr=rate,
        seed=seed,
        batch_size=batch,
        data=info,
        runs=tuple(runs),
        best=best,
        helps=helps,
        target=target,
        note=note,
        timing={"seconds": round(time.perf_counter() - started, 3), "runs": {r.remedy: r.seconds for r in runs}},
    )


def _pseudo_norm_scale(
    model: nn.Module,
    candidates: Mapping[str, tuple[Suggestion, ...]],
    x: Tensor,
    y: Tensor,
    task: Task,
    source: str,
    device: torch.device,
    seed: int,
) -> float | None:
    """The gradient scale pseudo-norms restore in training: the RMS of the training loss's gradient at the last
    hidden layer, for one training minibatch. The scan's own value was measured with its probe loss and batch size;
    under SGD a scale a few times off already fails (benchmarks/pseudonorm_choices.py), so it is measured again here,
    on a copy (a forward in training mode updates BatchNorm statistics)."""
    layer = next(
        (
            str(s.params["reference_layer"])
            for group in candidates.values()
            for s in group
            if s.remedy is Remedy.PSEUDO_NORM and "reference_layer" in s.params
        ),
        None,
    )
    if layer is None:
        return None
    probe = copy.deepcopy(model).train()
    with _forked_rng(device, seed):
        return reference_scale(probe, layer, lambda: _loss(_forward(probe, x, UNTREATED, 0, source), y, task, source))


def verdict(runs: Sequence[Run], task: Task) -> tuple[str | None, bool]:
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
        helps = (best.test_accuracy or 0.0) >= (untreated.test_accuracy or 0.0) + HELPS_ACCURACY - 1e-12
    else:
        ours, theirs = best.test_loss, untreated.test_loss
        helps = (
            ours is not None
            and theirs is not None
            and math.isfinite(ours)
            and (not math.isfinite(theirs) or ours <= (1 - HELPS_LOSS_RATIO) * theirs)
        )
    return best.remedy, bool(helps)


# ------------------------------------------------------------------------------------------------ internals


def _optimizer(name: str) -> Optimizer:
    try:
        return Optimizer(str(name).lower())
    except ValueError:
        raise ConfigError(f"--optimizer {name!r}: choose sgd or adam") from None


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _float_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _cast_inputs(inputs: Tensor, model: nn.Module) -> Tensor:
    # dataset() often hands over float64 (numpy's default); the model computes in its own dtype.
    return inputs.to(_float_dtype(model)) if inputs.is_floating_point() else inputs


def _split(n: int, seed: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    test = max(1, round(n * TEST_FRACTION))
    return perm[: n - test], perm[n - test :]


def _batch_order(train_idx: Tensor, batch: int, steps: int, seed: int) -> Tensor:
    """(steps, batch) training indices: consecutive chunks of a stream of seeded permutations."""
    generator = torch.Generator().manual_seed(seed + 1)  # not the split's stream
    n = int(train_idx.numel())
    needed = steps * batch
    epochs = -(-needed // n)
    stream = torch.cat([train_idx[torch.randperm(n, generator=generator)] for _ in range(epochs)])
    return stream[:needed].view(steps, batch)


@contextlib.contextmanager
def _forked_rng(device: torch.device, seed: int) -> Iterator[None]:
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _kept_mode(model: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, flag in modes:
            m.training = flag


def _train(
    patched: Patched,
    name: str,
    inputs: Tensor,
    targets: Tensor,
    order: Tensor,
    task: Task,
    opt: Optimizer,
    lr: float,
    tick: Callable[[int], None],
    source: str,
) -> tuple[list[float], bool]:
    params = [p for p in patched.parameters() if p.requires_grad]
    optim: torch.optim.Optimizer = (
        torch.optim.SGD(params, lr=lr) if opt is Optimizer.sgd else torch.optim.Adam(params, lr=lr)
    )
    patched.train()
    pending: list[Tensor] = []
    losses: list[float] = []
    steps = int(order.shape[0])
    for step in range(steps):
        idx = order[step].to(inputs.device)
        x, y = inputs[idx], targets[idx]
        optim.zero_grad(set_to_none=True)
        loss = _loss(_forward(patched, x, name, step, source), y, task, source)
        pending.append(loss.detach())
        penalty = patched.penalty()
        total = loss if penalty is None else loss + penalty
        total.backward()  # type: ignore[no-untyped-call]
        if patched.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, patched.clip_norm)
        optim.step()
        tick(step + 1)
        if len(pending) >= _DIVERGENCE_CHECK or step == steps - 1:
            values = torch.stack(pending).double().cpu().tolist()  # one host read per check
            pending.clear()
            for value in values:
                losses.append(value)
                if not math.isfinite(value):
                    return losses, True
    return losses, False


def _forward(model: nn.Module, x: Tensor, name: str, step: int, source: str) -> Tensor:
    try:
        return probes.select_output(probes.call_model(model, x))
    except GradscopeError:
        raise
    except Exception as exc:
        where = "dataset() inputs" if source == "dataset" else "synthetic inputs"
        raise ProbeError(
            f"run {name}: forward failed at step {step} on {where} of shape {tuple(x.shape)}: {_describe(exc)}"
        ) from None


def _loss(output: Tensor, y: Tensor, task: Task, source: str) -> Tensor:
    label = "dataset()" if source == "dataset" else "the synthetic task"
    if task is Task.CLASSIFICATION:
        if (
            not ((output.dim() == 2 and y.dim() == 1) or (output.dim() == 3 and y.dim() == 2))
            or output.shape[:-1] != y.shape
        ):
            raise ProbeError(
                f"{label} has integer targets of shape {tuple(y.shape)} (classes), but the "
                f"model outputs shape {tuple(output.shape)}; cross-entropy needs outputs (B, C) "
                "with targets (B,), or (B, T, C) with (B, T)"
            )
        classes = output.shape[-1]
        if bool(((y < 0) | (y >= classes)).any()):
            raise ProbeError(f"{label} has class labels outside 0..{classes - 1}, the model's {classes} output classes")
        return nn.functional.cross_entropy(output.reshape(-1, classes).float(), y.reshape(-1))
    target = y
    if output.shape != y.shape:
        if output.numel() != y.numel():
            raise ProbeError(
                f"{label} has float targets of shape {tuple(y.shape)} (regression), but the "
                f"model outputs shape {tuple(output.shape)}; mean squared error needs matching "
                "shapes"
            )
        target = y.reshape(output.shape)
    return nn.functional.mse_loss(output.float(), target.float())


def _evaluate(
    model: nn.Module, inputs: Tensor, targets: Tensor, idx: Tensor, task: Task
) -> tuple[float | None, float | None]:
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=inputs.device)
    correct = torch.zeros((), dtype=torch.float64, device=inputs.device)
    count = 0
    with torch.no_grad():
        for chunk in torch.split(idx.to(inputs.device), EVAL_CHUNK):
            x, y = inputs[chunk], targets[chunk]
            out = _output(probes.call_model(model, x))
            if task is Task.CLASSIFICATION:
                classes = out.shape[-1]
                flat, labels = out.reshape(-1, classes).float(), y.reshape(-1)
                loss_sum += nn.functional.cross_entropy(flat, labels, reduction="sum").double()
                correct += (flat.argmax(dim=-1) == labels).sum().double()
                count += int(labels.numel())
            else:
                target = y.reshape(out.shape).float()
                loss_sum += nn.functional.mse_loss(out.float(), target, reduction="sum").double()
                count += int(target.numel())
    model.train()
    loss = float(loss_sum.item()) / count
    if not math.isfinite(loss):
        loss = math.nan
    accuracy = float(correct.item()) / count if task is Task.CLASSIFICATION else None
    return loss, accuracy


def _output(output: Any) -> Tensor:
    # Under no_grad the output does not require grad, which select_output (made for backward) refuses.
    tensor = probes._find_output_tensor(output)
    if tensor is None or not tensor.is_floating_point():
        raise ProbeError(f"the model returned {type(output).__name__}, which holds no floating-point tensor")
    return tensor


def _classes(model: nn.Module, inputs: Tensor, task: Task) -> int | None:
    if task is not Task.CLASSIFICATION:
        return None
    with torch.no_grad(), _kept_mode(model):
        model.eval()
        return int(_output(probes.call_model(model, inputs[:2])).shape[-1])


def _bucketed(losses: Sequence[float], steps: int) -> tuple[float, ...]:
    points = min(steps, CURVE_POINTS)
    out: list[float] = []
    for i in range(points):
        lo, hi = i * steps // points, (i + 1) * steps // points
        chunk = losses[lo:hi]
        if not chunk:
            break
        mean = math.fsum(chunk) / len(chunk) if all(math.isfinite(v) for v in chunk) else math.nan
        out.append(float(f"{mean:.6g}"))  # 6 significant digits: float32 losses carry no more
        if len(chunk) < hi - lo:  # the run stopped inside this bucket
            break
    return tuple(out)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
