"""``scan``: the one library call. Probe batches through the model with hooks, diagnose, suggest, return a Report.

It never prints and leaves the model as it found it: parameters, buffers (BatchNorm running statistics), ``.grad``,
``requires_grad``, training mode, hooks, and the global RNG state.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import gates, probes
from .advice import suggest
from .config import Config
from .diagnose import Diagnosis, diagnose
from .errors import ProbeError
from .recorder import Recorder
from .records import LayerRecord, ModelShape, PositionProfile
from .results import ModelInfo, ProbeInfo, Report
from .torchutil import device_of, dtype_name, float_dtype, has_skip_connection, iter_tensors, seeded, threads
from .util import first_line

LossFn = Callable[[Any, Any], torch.Tensor]
GATE_LEVELS = 3  # rounds of opening gates: nested gates deeper than this are not looked for
Progress = Callable[[int, int], None]


def scan(
    model: nn.Module,
    batches: Sequence[Any],
    *,
    loss_fn: LossFn | None = None,
    config: Config | None = None,
    target: str | None = None,
    progress: Progress | None = None,
) -> Report:
    """Probe ``model`` with ``batches`` and return its gradient-flow Report.

    ``batches``: each a Tensor (one positional input), a tuple (positional inputs) or a dict (keyword inputs).
    ``loss_fn(output, batch)``: a scalar; default ``probes.default_loss`` (README, "The default loss").
    Raises ``GradscopeError`` subclasses only.
    """
    config = config or Config()
    started = time.perf_counter()
    check_model(model)
    batch_dim, assumed = probes.layout(model, batches)  # a list of its own, which keeps what build_batches decided
    batches = probes.ProbeBatches(batches, batch_dim=batch_dim, assumed=assumed)
    if not batches:
        raise ProbeError("no probe batches: pass at least one batch (--batches must be >= 1)")
    device = device_of(model)
    with preserved(model), threads(config.probe.threads, device):
        probe = _probe(model, batches, loss_fn, config, device, progress)
        diagnosis = diagnose(probe.records, config.diagnose, probe.culprit, profile=probe.profile)
        if gates.worth_checking(diagnosis):
            diagnosis = _with_gates(model, batches, loss_fn, config, device, probe, diagnosis)
    forward_finite = all(math.isfinite(v) for r in probe.records for v in r.activation_rms)
    # A non-finite loss over finite outputs is the loss's fault, even though the backward pass then carries
    # Inf/NaN into every layer: blaming the last layer's backward would send the user to the wrong place.
    if any(not math.isfinite(v) for v in probe.losses) and (diagnosis.nonfinite_origin is None or forward_finite):
        raise ProbeError(
            "the loss is not finite although every layer's output is: check loss_fn in the model file "
            "(log of zero? division by zero?)"
            if loss_fn is not None
            else "the loss is not finite although every layer's output is: check the model's final operation"
        )
    suggestions = suggest(diagnosis, probe.records, config, probe.shape)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Report(
        model=ModelInfo(
            target or type(model).__name__,
            type(model).__name__,
            n_params,
            n_trainable,
            skip_connections=probe.shape.skip_connections,
        ),
        probe=ProbeInfo(
            batches=len(batches),
            batch_size=probes.batch_size_of(batches[0], batch_dim),
            seed=config.probe.seed,
            loss=_loss_name(loss_fn),
            device=str(device),
            dtype=dtype_name(float_dtype(model)),
            optimizer=config.diagnose.optimizer,
            inputs=probes.inputs_of(batches[0]),
            assumed=assumed,
        ),
        layers=diagnosis.layers,
        findings=diagnosis.findings,
        suggestions=suggestions,
        summary=diagnosis.summary,
        positions=diagnosis.positions,
        timing={"seconds": round(time.perf_counter() - started, 3)},
    )


@dataclass
class _Probe:
    """What one pass over the probe batches recorded."""

    records: list[LayerRecord]
    losses: list[float]
    culprit: tuple[str, str] | None
    profile: PositionProfile | None
    shape: ModelShape


def _probe(
    model: nn.Module,
    batches: Sequence[Any],
    loss_fn: LossFn | None,
    config: Config,
    device: torch.device,
    progress: Progress | None,
) -> _Probe:
    """Forward and backward over every batch with the recorder's hooks (the global RNGs seeded for it)."""
    shape = ModelShape()
    batch_dim, _ = probes.layout(model, batches)
    with (
        seeded(config.probe.seed, device),
        Recorder(model, saturation_derivative=config.diagnose.saturation_derivative, positions=True) as recorder,
    ):
        model.train(config.probe.mode == "train")
        for i, batch in enumerate(batches):
            batch = probes.to_device(batch, device)
            skip = _probe_once(model, recorder, batch, i, loss_fn, config.probe.seed, batch_dim)
            shape = shape if i else ModelShape(skip_connections=skip)
            if progress is not None:
                progress(i + 1, len(batches))
        records = list(recorder.ordered())
        culprit = None
        if any(not math.isfinite(v) for r in records for v in r.activation_rms):
            culprit = locate_nonfinite(model, [probes.to_device(b, device) for b in batches])
    return _Probe(records, list(recorder.losses), culprit, recorder.profile, shape)


def _with_gates(
    model: nn.Module,
    batches: Sequence[Any],
    loss_fn: LossFn | None,
    config: Config,
    device: torch.device,
    probe: _Probe,
    diagnosis: Diagnosis,
) -> Diagnosis:
    """The diagnosis with the layers that gates closed at init explain set apart (``gates``): the batches are
    probed again with the gates opened, and what no longer shows was the gates' doing. Gates behind gates (CaiT's
    trunk behind its class-attention gates) come alive once the outer ones are open: up to ``GATE_LEVELS`` rounds."""
    found = gates.find(model, diagnosis.summary.reference_grad_rms, config.diagnose)
    after = diagnosis
    opened: list[gates.Candidate] = []
    for _ in range(GATE_LEVELS):
        if not found:
            break
        opened += found
        with gates.opened(opened, config.probe.seed):
            again = _probe(model, batches, loss_fn, config, device, None)
            after = diagnose(again.records, config.diagnose, again.culprit, profile=again.profile)
            known = {c.gate.parameter for c in opened}
            found = [c for c in gates.find(model, after.summary.reference_grad_rms, config.diagnose)
                     if c.gate.parameter not in known]  # fmt: skip
    gating = gates.explained(opened, _parameter_owners(model), diagnosis, after) if opened else None
    if gating is None:
        return diagnosis
    return diagnose(probe.records, config.diagnose, probe.culprit, profile=probe.profile, gating=gating)


def _parameter_owners(model: nn.Module) -> dict[str, str]:
    """Parameter name → the layer (module name) that owns it directly."""
    return {
        f"{module_name}.{name}" if module_name else name: module_name
        for module_name, module in model.named_modules()
        for name, _ in module.named_parameters(recurse=False)
    }


def _probe_once(
    model: nn.Module,
    recorder: Recorder,
    batch: Any,
    index: int,
    loss_fn: LossFn | None,
    seed: int,
    batch_dim: int = 0,
) -> bool:
    """One forward and backward; returns whether the graph has a skip connection (looked at in batch 0 only)."""
    for p in model.parameters():
        p.grad = None
    recorder.start_batch(probes.batch_size_of(batch, batch_dim))
    try:
        output = probes.call_model(model, batch)
    except (KeyboardInterrupt, ProbeError):
        raise
    except Exception as exc:  # the user's forward failed: say in which layer
        where = locate_failure(model, batch)
        place = f" in layer '{where[0]}' ({where[1]})" if where else ""
        raise ProbeError(
            f"forward failed{place} on probe batch {index}: {first_line(exc)}; check --input-shape or the "
            f"model file's example_inputs()"
        ) from exc
    if loss_fn is None:
        loss = probes.default_loss(probes.select_output(output), seed, index)
    else:
        try:
            loss = loss_fn(output, batch)
        except Exception as exc:
            raise ProbeError(f"loss_fn failed on probe batch {index}: {type(exc).__name__}: {first_line(exc)}") from exc
        _check_loss(loss)
    recorder.add_loss(loss)
    skip = index == 0 and has_skip_connection(loss)
    try:
        loss.backward()  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise ProbeError(f"backward failed on probe batch {index}: {first_line(exc)}") from exc
    recorder.end_batch()
    return skip


def _check_loss(loss: Any) -> None:
    if not isinstance(loss, torch.Tensor):
        raise ProbeError(f"loss_fn returned {type(loss).__name__}; it must return a scalar tensor")
    if loss.numel() != 1:
        raise ProbeError(f"loss_fn returned a tensor of shape {tuple(loss.shape)}; it must return a scalar")
    if not loss.is_floating_point():
        raise ProbeError(f"loss_fn returned a {loss.dtype} tensor; it must be floating point")
    if not loss.requires_grad:
        raise ProbeError("loss_fn returned a tensor that does not depend on the model's trainable parameters")


def check_model(model: Any) -> None:
    """Raise ``ProbeError`` unless ``model`` is a module with trainable, materialised parameters."""
    if not isinstance(model, nn.Module):
        raise ProbeError(f"scan needs a torch.nn.Module, got {type(model).__name__}")
    params = list(model.parameters())
    if not params:
        raise ProbeError(f"{type(model).__name__} has no parameters: there is no gradient to measure")
    if any(p.is_meta for p in params):
        raise ProbeError(
            f"{type(model).__name__} has parameters on the meta device (no data): materialise them "
            "first (e.g. model.to_empty(device='cpu') and initialise, or load a checkpoint)"
        )
    if not any(p.requires_grad for p in params):
        raise ProbeError(
            f"{type(model).__name__} has no trainable parameters (all {len(params)} have "
            "requires_grad=False): nothing to diagnose"
        )


def _loss_name(loss_fn: LossFn | None) -> str:
    if loss_fn is None:
        return probes.DEFAULT_LOSS_NAME
    return getattr(loss_fn, "__name__", type(loss_fn).__name__)


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restore what a probe run changes: grads, training flags, requires_grad, buffers (BatchNorm statistics)."""
    params = list(model.parameters())
    grads = [p.grad for p in params]
    requires = [p.requires_grad for p in params]
    training = [(m, m.training) for m in model.modules()]
    with torch.no_grad():
        buffers = [(b, b.clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for p, grad, flag in zip(params, grads, requires, strict=True):
            p.grad = grad
            p.requires_grad_(flag)
        for module, flag in training:
            module.training = flag


def locate_failure(model: nn.Module, batch: Any) -> tuple[str, str] | None:
    """Run forward again with a module stack and return the innermost module that was running when it failed."""
    names = {module: name for name, module in model.named_modules()}
    stack: list[nn.Module] = []
    handles = []
    try:
        for module in names:
            handles.append(module.register_forward_pre_hook(lambda m, _i: stack.append(m)))
            # A forward hook's return value replaces the module's output: pop, and return None.
            handles.append(module.register_forward_hook(lambda _m, _i, _o: None if stack.pop() else None))
        with torch.no_grad():
            probes.call_model(model, batch)
    except Exception:
        if stack:
            culprit = stack[-1]
            return names[culprit] or "(root)", type(culprit).__name__
    finally:
        for handle in handles:
            handle.remove()
    return None


def locate_nonfinite(model: nn.Module, batches: Sequence[Any]) -> tuple[str, str] | None:
    """The first module, of any kind, whose output is non-finite while its inputs are finite (error path only:
    it hooks every module, which the normal scan does not pay for)."""
    names = {module: name for name, module in model.named_modules()}
    found: list[nn.Module] = []

    def check(module: nn.Module, inputs: Any, output: Any) -> None:
        if found:
            return
        outs = [t for t in iter_tensors(output) if t.is_floating_point()]
        ins = [t for t in iter_tensors(inputs) if t.is_floating_point()]
        if any(not bool(torch.isfinite(t).all()) for t in outs) and all(bool(torch.isfinite(t).all()) for t in ins):
            found.append(module)

    handles = [module.register_forward_hook(check) for module in names]
    try:
        with torch.no_grad():
            for batch in batches:
                with contextlib.suppress(Exception):
                    probes.call_model(model, batch)
                if found:
                    break
    finally:
        for handle in handles:
            handle.remove()
    if not found:
        return None
    return names[found[0]] or "(root)", type(found[0]).__name__
