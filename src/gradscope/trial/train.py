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
from ..torchutil import copy_model, device_of, seeded, threads
from ..util import describe
from ..vocab import Optimizer, Remedy
from .data import batch_order, cast_inputs, check_data, kept_mode, output_tensor, split, synthetic_task
from .planning import UNTREATED
from .results import DataInfo, Run, Task, TrialReport, verdict

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
    batch_size: int | None = None,
    example: Any = None,
    pseudo_norm_kwargs: dict[str, Any] | None = None,
    progress: Progress | None = None,
    target: str | None = None,
    note: str | None = None,
) -> TrialReport:
    """Train ``model`` untreated and with each candidate for ``steps`` steps; return the comparison.

    ``data``: ``(inputs, targets)``; None builds the synthetic task in the shape of ``example`` (one probe batch;
    None: the inferred input shape). ``steps``, ``optimizer``, ``lr`` and ``batch_size`` default to the config's
    ``trial`` section. Never prints; leaves ``model`` and the global RNGs as they were.
    """
    config = config or Config()
    # One thread count for the whole trial (probe.threads): CPU kernels sum in a thread-dependent order, and a
    # training run amplifies the last digit into a different curve.
    with threads(config.probe.threads, device_of(model)):
        return _run_trial(
            model, candidates, data, config, steps, optimizer, lr, seed, batch_size, example, pseudo_norm_kwargs,
            progress, target, note,
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
    batch_size: int | None,
    example: Any,
    pseudo_norm_kwargs: dict[str, Any] | None,
    progress: Progress | None,
    target: str | None,
    note: str | None,
) -> TrialReport:
    started = time.perf_counter()
    settings = config.trial
    steps = settings.steps if steps is None else steps
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
        source = "synthetic"
    inputs, targets = check_data(data)
    inputs = cast_inputs(inputs, model).to(device)
    targets = targets.to(device)
    train_idx, test_idx = split(inputs.shape[0], seed, settings.test_fraction)
    batch = min(batch_size, int(train_idx.numel()))
    order = batch_order(train_idx, batch, steps, seed)
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
                if i == 0:
                    classes = _classes(patched, inputs, task)
                if not diverged:
                    final_train, _ = _evaluate(patched, inputs, targets, train_idx, task)
                    test_loss, accuracy = _evaluate(patched, inputs, targets, test_idx, task)
            except GradscopeError:
                raise
            except Exception as exc:
                raise ProbeError(f"run {name}: evaluation in eval mode failed: {describe(exc)}") from None
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
    best, helps = verdict(runs, task, settings)
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
        thresholds=settings,
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
    probe = copy_model(model).train()
    with seeded(seed, device):
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
    optim: torch.optim.Optimizer = (
        torch.optim.SGD(params, lr=lr) if opt is Optimizer.SGD else torch.optim.Adam(params, lr=lr)
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
    model.eval()
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
    model.train()
    loss = float(loss_sum.item()) / count
    if not math.isfinite(loss):
        loss = math.nan
    accuracy = float(correct.item()) / count if task is Task.CLASSIFICATION else None
    return loss, accuracy


def _classes(model: nn.Module, inputs: Tensor, task: Task) -> int | None:
    if task is not Task.CLASSIFICATION:
        return None
    with torch.no_grad(), kept_mode(model):
        model.eval()
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
