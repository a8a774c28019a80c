"""The training loop of a trial: copies of one model, from the same weights, each trained on the same
minibatches, untreated and with each remedy; measured on the held-out split."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import probes
from ..config import Config
from ..errors import ConfigError, GradscopeError, ProbeError
from ..remedies.apply import Options, Patched, apply
from ..remedies.pseudonorm import reference_scale
from ..results import Suggestion
from ..torchutil import copy_model, device_of, seeded, set_training, threads
from ..util import describe
from ..vocab import Optimizer, Remedy
from .data import (
    batch_order,
    cast_inputs,
    check_data,
    inputs_are_floats,
    kept_mode,
    output_tensor,
    split,
    synthetic_task,
)
from .planning import UNTREATED
from .results import Arm, DataInfo, Run, Task, TrialReport, verdict

CURVE_POINTS = 100
EVAL_CHUNK = 512  # samples per forward when measuring (bounds memory on large held-out sets)
_DIVERGENCE_CHECK = 10  # steps between host reads of the losses (one sync per check, not per step)

Progress = Callable[[str, int, int], None]  # (remedy, steps done over all runs, total steps over all runs)


def run_trial(
    model: nn.Module,
    *,
    candidates: Mapping[str, tuple[Suggestion, ...]],
    data: tuple[Tensor, Tensor] | None = None,
    config: Config | None = None,
    steps: int | None = None,
    optimizer: str | None = None,
    lr: float | None = None,
    seed: int = 0,
    seeds: int | None = None,
    build: Callable[[int], nn.Module] | None = None,
    batch_size: int | None = None,
    example: Any = None,
    pseudo_norm_kwargs: dict[str, Any] | None = None,
    progress: Progress | None = None,
    target: str | None = None,
    note: str | None = None,
    not_trained: Sequence[tuple[str, str]] = (),
) -> TrialReport:
    """Train ``model`` untreated and with each candidate for ``steps`` steps, once per seed; return the comparison.

    ``seeds`` (default: the config's ``trial.seeds``) runs seeds ``seed``, ``seed + 1``, …: each draws its own
    minibatch order and dropout, and, when ``build`` is given (seed → a freshly built model, as the model file
    builds it), its own initial weights; ``model`` itself is the first seed's. The held-out split is the same
    for every seed. ``data``: ``(inputs, targets)``; None builds the synthetic task in the shape of ``example``
    (one probe batch; None: the inferred input shape). ``steps``, ``optimizer``, ``lr`` and ``batch_size``
    default to the config's ``trial`` section. Never prints; leaves ``model`` and the global RNGs as they were.
    """
    config = config or Config()
    # One thread count for the whole trial (probe.threads): CPU kernels sum in a thread-dependent order, and a
    # training run amplifies the last digit into a different curve.
    with threads(config.probe.threads, device_of(model)):
        return _run_trial(
            model, candidates, data, config, steps, optimizer, lr, seed, seeds, build, batch_size, example,
            pseudo_norm_kwargs, progress, target, note, tuple(not_trained),
        )  # fmt: skip


def _run_trial(
    model: nn.Module,
    candidates: Mapping[str, tuple[Suggestion, ...]],
    data: tuple[Tensor, Tensor] | None,
    config: Config,
    steps: int | None,
    optimizer: str | None,
    lr: float | None,
    seed: int,
    seeds: int | None,
    build: Callable[[int], nn.Module] | None,
    batch_size: int | None,
    example: Any,
    pseudo_norm_kwargs: dict[str, Any] | None,
    progress: Progress | None,
    target: str | None,
    note: str | None,
    not_trained: tuple[tuple[str, str], ...],
) -> TrialReport:
    started = time.perf_counter()
    settings = config.trial
    steps = settings.steps if steps is None else steps
    count = settings.seeds if seeds is None else seeds
    if count < 1:
        raise ConfigError(f"--seeds {count}: must be at least 1")
    batch_size = settings.batch_size if batch_size is None else batch_size
    opt = _optimizer(settings.optimizer if optimizer is None else optimizer)
    if steps < 1:
        raise ConfigError(f"--steps {steps}: must be at least 1")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be at least 1")
    rate = settings.lr(opt) if lr is None else float(lr)
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"--lr {lr}: must be a finite number > 0")
    if UNTREATED in candidates:
        raise ConfigError(f"'{UNTREATED}' is the untreated run, always trained first; it is not a candidate")
    if not isinstance(model, nn.Module) or not any(p.requires_grad for p in model.parameters()):
        raise ProbeError("trial needs a torch.nn.Module with trainable parameters")
    device = device_of(model)
    source = "dataset"
    if data is None:
        data = synthetic_task(model, example, seed=seed, samples=settings.synthetic_samples)
        source = "synthetic" if inputs_are_floats(data) else "synthetic_tokens"
    inputs, targets = check_data(data)
    inputs = cast_inputs(inputs, model).to(device)
    targets = targets.to(device)
    train_idx, test_idx = split(inputs.shape[0], seed, settings.test_fraction)
    batch = min(batch_size, int(train_idx.numel()))
    task = Task.CLASSIFICATION if not targets.is_floating_point() else Task.REGRESSION
    names = [UNTREATED, *candidates]
    seed_list = tuple(range(seed, seed + count))
    total = steps * len(names) * count
    runs: dict[str, list[Run]] = {name: [] for name in names}
    classes: int | None = None
    for k, s in enumerate(seed_list):
        seed_model = model if k == 0 or build is None else _built(build, s, device)
        order = batch_order(train_idx, batch, steps, s)
        kwargs = dict(pseudo_norm_kwargs or {})
        if "scale" not in kwargs:  # measured on this seed's init
            scale = _pseudo_norm_scale(seed_model, candidates, inputs[order[0]], targets[order[0]], task, source, s)
            if scale is not None:
                kwargs["scale"] = scale
        for i, name in enumerate(names):
            done = (k * len(names) + i) * steps

            def tick(step: int, _done: int = done, _name: str = name) -> None:
                if progress is not None:
                    progress(_name, _done + step, total)

            run = _train_one(seed_model, name, candidates.get(name, ()), kwargs, inputs, targets, order, train_idx,
                             test_idx, task, opt, rate, tick, source, s, device)  # fmt: skip
            if classes is None and run.remedy == UNTREATED and task is Task.CLASSIFICATION:
                classes = _classes(seed_model, inputs, task)
            runs[name].append(run)
            tick(steps)
    arms = tuple(Arm(name, tuple(runs[name])) for name in names)
    best, helps = verdict(arms, task, settings)
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
        seeds=seed_list,
        batch_size=batch,
        data=info,
        arms=arms,
        best=best,
        helps=helps,
        target=target,
        note=note,
        thresholds=settings,
        init_varies=build is not None or count == 1,
        not_trained=not_trained,
        timing={
            "seconds": round(time.perf_counter() - started, 3),
            "runs": {a.remedy: round(sum(r.seconds for r in a.runs), 3) for a in arms},
        },
    )


def _built(build: Callable[[int], nn.Module], seed: int, device: torch.device) -> nn.Module:
    """The model as its file builds it, under ``seed``: another seed's initial weights."""
    try:
        with seeded(seed, device):
            return build(seed).to(device)
    except GradscopeError:
        raise
    except Exception as exc:
        raise ProbeError(f"building the model again for seed {seed} failed: {describe(exc)}") from None


def _train_one(
    model: nn.Module,
    name: str,
    suggestions: tuple[Suggestion, ...],
    pseudo_norm_kwargs: dict[str, Any],
    inputs: Tensor,
    targets: Tensor,
    order: Tensor,
    train_idx: Tensor,
    test_idx: Tensor,
    task: Task,
    opt: Optimizer,
    rate: float,
    tick: Callable[[int], None],
    source: str,
    seed: int,
    device: torch.device,
) -> Run:
    """One arm, one seed: a copy of ``model`` with the remedy applied, trained and measured."""
    started = time.perf_counter()
    with seeded(seed, device):
        try:
            patched = apply(model, suggestions, Options(pseudo_norm_kwargs=pseudo_norm_kwargs, seed=seed))
        except GradscopeError as exc:
            raise ProbeError(f"cannot apply remedy {name}: {exc}") from None
        except Exception as exc:
            raise ProbeError(f"cannot apply remedy {name}: {describe(exc)}") from None
        losses, diverged = _train(patched, name, inputs, targets, order, task, opt, rate, tick, source)
        final_train = test_loss = accuracy = None
        try:  # training ran forward already; eval mode can still differ (a model that branches on it)
            if not diverged:
                final_train, _ = _evaluate(patched, inputs, targets, train_idx, task)
                test_loss, accuracy = _evaluate(patched, inputs, targets, test_idx, task)
        except GradscopeError:
            raise
        except Exception as exc:
            raise ProbeError(f"run {name}: evaluation in eval mode failed: {describe(exc)}") from None
    return Run(
        remedy=name,
        final_train_loss=final_train,
        test_loss=test_loss,
        test_accuracy=accuracy,
        curve=_bucketed(losses, int(order.shape[0])),
        steps_run=len(losses),
        diverged=diverged,
        applied=tuple(patched.applied),
        skipped=tuple(patched.skipped),
        seconds=round(time.perf_counter() - started, 3),
        seed=seed,
    )


def _pseudo_norm_scale(
    model: nn.Module,
    candidates: Mapping[str, tuple[Suggestion, ...]],
    x: Tensor,
    y: Tensor,
    task: Task,
    source: str,
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
    probe = set_training(copy_model(model), True)
    with seeded(seed, device_of(model)):
        return reference_scale(probe, layer, lambda: _loss(_forward(probe, x, UNTREATED, 0, source), y, task, source))


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
    # foreach: one fused update over all parameters (torch picks it by itself only on CUDA); several times faster
    # than the per-tensor loop on the deep narrow models trials are about, and the same arithmetic.
    optim: torch.optim.Optimizer = (
        torch.optim.SGD(params, lr=lr, foreach=True)
        if opt is Optimizer.SGD
        else torch.optim.Adam(params, lr=lr, foreach=True)
    )
    set_training(patched, True)
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
            f"run {name}: forward failed at step {step} on {where} of shape {tuple(x.shape)}: {describe(exc)}"
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
    set_training(model, False)
    loss_sum = torch.zeros((), dtype=torch.float64, device=inputs.device)
    correct = torch.zeros((), dtype=torch.float64, device=inputs.device)
    count = 0
    with torch.no_grad():
        for chunk in torch.split(idx.to(inputs.device), EVAL_CHUNK):
            x, y = inputs[chunk], targets[chunk]
            out = output_tensor(probes.call_model(model, x))
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
    set_training(model, True)
    loss = float(loss_sum.item()) / count
    if not math.isfinite(loss):
        loss = math.nan
    accuracy = float(correct.item()) / count if task is Task.CLASSIFICATION else None
    return loss, accuracy


def _classes(model: nn.Module, inputs: Tensor, task: Task) -> int | None:
    if task is not Task.CLASSIFICATION:
        return None
    with torch.no_grad(), kept_mode(model):
        set_training(model, False)
        return int(output_tensor(probes.call_model(model, inputs[:2])).shape[-1])


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


def _optimizer(name: str) -> Optimizer:
    try:
        return Optimizer(str(name).lower())
    except ValueError:
        raise ConfigError(f"--optimizer {name!r}: choose sgd or adam") from None
