"""``scan``: the one library call. Probe batches through the model with hooks, diagnose, suggest, return a Report.

It never prints and leaves the model as it found it (``preserved``): the module tree, every parameter and buffer
object with its value, dtype and ``.grad``, ``requires_grad``, training mode, module attributes, hooks, and the
global RNG states. It runs with autograd enabled whatever the caller's grad mode (``no_grad``, ``inference_mode``).
"""

from __future__ import annotations

import contextlib
import math
import operator
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from . import gates, probes
from .advice import suggest
from .config import Config
from .diagnose import Diagnosis, diagnose
from .errors import ProbeError
from .recorder import Recorder
from .records import Gating, LayerRecord, ModelShape, PositionProfile
from .results import ModelInfo, ProbeInfo, Report
from .torchutil import (
    AutogradGraph,
    device_of,
    dtype_name,
    float_dtype,
    iter_tensors,
    seeded,
    set_training,
    threads,
)
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
    with autograd_on():
        return _scan(model, batches, loss_fn, config, target, progress, started)


@contextlib.contextmanager
def autograd_on() -> Iterator[None]:
    """Autograd on for the block, whatever the caller's mode (``torch.no_grad()``, ``torch.inference_mode()``,
    ``torch.set_grad_enabled(False)`` at a model file's import): a scan measures gradients, so it turns them on
    itself rather than blame the model for the caller's context (README, "Library")."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _scan(
    model: nn.Module,
    batches: list[Any],
    loss_fn: LossFn | None,
    config: Config,
    target: str | None,
    progress: Progress | None,
    started: float,
) -> Report:
    device = device_of(model)
    batch_dim, assumed = probes.layout(model, batches)
    with preserved(model), threads(config.probe.threads, device):
        probe = _probe(model, batches, loss_fn, config, device, progress)
        diagnosis = probe.diagnosed(config)
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
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    n_trainable = sum(p.numel() for p in params if p.requires_grad)
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
    largest_grad_norm: dict[int, float]  # Recorder.largest_grad_norm

    def diagnosed(self, config: Config, gating: Gating | None = None) -> Diagnosis:
        return diagnose(
            self.records,
            config.diagnose,
            self.culprit,
            profile=self.profile,
            gating=gating,
            ignored_outputs=self.shape.ignored_outputs,
        )


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
    params = list(model.parameters())
    with (
        seeded(config.probe.seed, device),
        Recorder(model, saturation_derivative=config.diagnose.saturation_derivative, positions=True) as recorder,
    ):
        set_training(model, config.probe.mode == "train")
        for i, batch in enumerate(batches):
            batch = probes.to_device(batch, device)
            found = _probe_once(model, params, recorder, batch, i, loss_fn, config.probe.seed, batch_dim)
            shape = shape if i else found
            if progress is not None:
                progress(i + 1, len(batches))
        for index, tap in enumerate(recorder.taps):
            reached = [p for p in tap.trainable if id(p) in recorder.largest_grad_norm]
            recorder.layers[index].additive = bool(reached) and all(id(p) in shape.additive for p in reached)
        records = list(recorder.ordered())
        culprit = None
        if any(not math.isfinite(v) for r in records for v in r.activation_rms):
            culprit = locate_nonfinite(model, [probes.to_device(b, device) for b in batches])
    return _Probe(records, list(recorder.losses), culprit, recorder.profile, shape, recorder.largest_grad_norm)


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
    additive = probe.shape.additive
    found = gates.find(model, diagnosis.summary.reference_grad_rms, config.diagnose, probe.largest_grad_norm, additive)
    after = diagnosis
    opened: list[gates.Candidate] = []
    for _ in range(GATE_LEVELS):
        if not found:
            break
        opened += found
        with gates.opened(opened, config.probe.seed):
            reprobe = _probe(model, batches, loss_fn, config, device, None)
            after = reprobe.diagnosed(config)
            known = {c.gate.parameter for c in opened}
            found = gates.find(
                model, after.summary.reference_grad_rms, config.diagnose, reprobe.largest_grad_norm, additive
            )
            found = [c for c in found if c.gate.parameter not in known]
    gating = gates.explained(opened, _parameter_owners(model), diagnosis, after) if opened else None
    return diagnosis if gating is None else probe.diagnosed(config, gating)


def _parameter_owners(model: nn.Module) -> dict[str, str]:
    """Parameter name → the layer (module name) that owns it directly."""
    return {
        f"{module_name}.{name}" if module_name else name: module_name
        for module_name, module in model.named_modules()
        for name, _ in module.named_parameters(recurse=False)
    }


def _probe_once(
    model: nn.Module,
    params: list[nn.Parameter],
    recorder: Recorder,
    batch: Any,
    index: int,
    loss_fn: LossFn | None,
    seed: int,
    batch_dim: int = 0,
) -> ModelShape:
    """One forward and backward; returns what the graph has (looked at in batch 0 only)."""
    for p in params:
        p.grad = None
    recorder.start_batch(probes.batch_size_of(batch, batch_dim))
    with _kept_grads(params):
        shape = _forward_backward(model, recorder, batch, index, loss_fn, seed)
    recorder.end_batch()
    return shape


@contextlib.contextmanager
def _kept_grads(params: list[nn.Parameter]) -> Iterator[None]:
    """Gradients a post-accumulate-grad hook takes away ("optimizer in backward": the hook steps and sets
    ``p.grad = None``) are caught on their way in and put back as ``.grad`` for the recorder to read, so such
    layers are measured, not reported disconnected. Only parameters with such hooks are touched."""
    caught: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}
    handles = []

    def catcher(p: nn.Parameter) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            caught[id(p)] = (p, grad)

        return hook

    try:
        for p in params:
            if p.requires_grad and getattr(p, "_post_accumulate_grad_hooks", None):
                handles.append(p.register_hook(catcher(p)))  # type: ignore[no-untyped-call]
        yield
    finally:
        for handle in handles:
            handle.remove()
    for p, grad in caught.values():
        if p.grad is None:
            p.grad = grad


def _forward_backward(
    model: nn.Module, recorder: Recorder, batch: Any, index: int, loss_fn: LossFn | None, seed: int
) -> ModelShape:
    try:
        output = probes.call_model(model, batch)
    except (KeyboardInterrupt, ProbeError):
        raise
    except Exception as exc:  # the user's forward failed: say in which layer
        where = locate_failure(model, batch)
        place = f" in layer '{where[0]}' ({where[1]})" if where else ""
        raise ProbeError(
            f"forward failed{place} on probe batch {index}: {first_line(exc)}; {_input_hint(model, batch)}"
        ) from exc
    ignored = 0
    if loss_fn is None:
        selected = probes.select_output(output)
        loss = probes.default_loss(selected, seed, index)
        ignored = sum(1 for t in iter_tensors(output) if t is not selected and t.requires_grad)
    else:
        try:
            loss = loss_fn(output, batch)
        except Exception as exc:
            raise ProbeError(f"loss_fn failed on probe batch {index}: {type(exc).__name__}: {first_line(exc)}") from exc
        _check_loss(loss)
    recorder.add_loss(loss)
    shape = ModelShape(ignored_outputs=ignored)
    if index == 0:  # the graph, before backward frees it
        graph = AutogradGraph([loss])
        shape = ModelShape(graph.has_skip_connection(), ignored, frozenset(graph.additive_parameters()))
    try:
        loss.backward()  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise ProbeError(f"backward failed on probe batch {index}: {first_line(exc)}") from exc
    return shape


def _input_hint(model: nn.Module, batch: Any) -> str:
    """What to check after a failed forward: the float inputs' dtype when it is not the parameters' (probe inputs
    do not convert the model), an argument the probe passed as None, else their shape."""
    params = dtype_name(float_dtype(model))
    dtypes = sorted({dtype_name(t.dtype) for t in iter_tensors(batch) if t.is_floating_point()} - {params})
    if dtypes:
        return (
            f"the probe inputs are {'/'.join(dtypes)} but the model's parameters are {params}, and probing does not "
            f"convert the model: pass --input-dtype {params} (or leave it out), or convert the model in its file"
        )
    if isinstance(batch, Mapping):
        nones = [repr(k) for k, v in batch.items() if v is None]
    else:
        nones = [f"argument {i + 1}" for i, v in enumerate(batch) if v is None] if isinstance(batch, tuple) else []
    if nones:
        return (
            f"the probe passed None for forward()'s {', '.join(nones)}, as its signature allows (it makes up a second "
            "sequence only for a transformer decoder): give every input with example_inputs() in the model file"
        )
    return "check --input-shape or the model file's example_inputs()"


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
    """Raise ``ProbeError`` unless ``model`` is a Python module with trainable, materialised parameters."""
    if not isinstance(model, nn.Module):
        raise ProbeError(f"scan needs a torch.nn.Module, got {type(model).__name__}")
    scripted = next((name for name, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)), None)
    if scripted is not None:
        what = f"its submodule '{scripted}'" if scripted else f"{type(model).__name__}"
        raise ProbeError(
            f"{what} is a TorchScript module (torch.jit.script/trace), which takes no Python hooks: scan the "
            "nn.Module before scripting it"
        )
    lazy = next(
        (name for name, m in model.named_modules() if any(is_lazy(t) for t in (*m._parameters.values(),
                                                                                 *m._buffers.values()))),
        None,
    )  # fmt: skip
    if lazy is not None:
        module = model.get_submodule(lazy)
        raise ProbeError(
            f"{type(model).__name__} has uninitialised lazy parameters ('{lazy or '(model)'}', "
            f"{type(module).__name__}): run one forward pass to materialise them before scanning"
        )
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
    """Put back, in ``finally``, everything a probe run can change — also what the model's own code changes in
    forward or in its hooks (a momentum encoder, an optimizer in backward, a buffer reassigned or cast, a
    parameter re-registered, a ModuleList grown): the module tree, every parameter and buffer *object* in its
    place with its storage and value, ``.grad`` objects, ``requires_grad``, training flags, module attributes.

    Values are snapshotted in host memory (a write through ``.data`` bumps no version counter, so nothing cheaper
    than a copy can see every change): a model on an accelerator keeps all of its device memory for the probes,
    and the host holds one copy of its parameters and buffers. CPU tensors are copied back only where they differ;
    accelerator tensors are copied back unconditionally (one host-to-device copy, the same cost as comparing)."""
    snapshot = _Snapshot(model)
    try:
        yield
    finally:
        snapshot.restore()


@dataclass
class _TensorState:
    tensor: torch.Tensor
    data: torch.Tensor  # ``tensor.data`` then: the original storage, shape, strides and dtype
    value: torch.Tensor | None  # a host copy of the values (None: nothing to compare, a meta tensor)
    grad: torch.Tensor | None
    requires_grad: bool


class _Snapshot:
    """What ``preserved`` puts back: each module's attributes (``_parameters``, ``_buffers``, ``_modules`` and
    plain attributes, shallowly) and each parameter's and buffer's state."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = [(m, dict(m.__dict__), *_registries(m)) for m in model.modules()]
        seen: set[int] = set()
        self.tensors: list[_TensorState] = []
        with torch.no_grad():
            for _, _, params, buffers, _, _ in self.modules:
                for t in (*params.values(), *buffers.values()):
                    if t is None or id(t) in seen:
                        continue
                    seen.add(id(t))
                    data = t.data
                    value = None if data.is_meta else _host_copy(data)
                    grad = t.grad if isinstance(t, nn.Parameter) else None
                    self.tensors.append(_TensorState(t, data, value, grad, t.requires_grad))

    def restore(self) -> None:
        for module, attributes, params, buffers, children, non_persistent in self.modules:
            state = module.__dict__
            if not _same_items(state, attributes):
                for key in [k for k in state if k not in attributes]:
                    del state[key]
                for key, value in attributes.items():
                    if state.get(key, _MISSING) is not value:
                        state[key] = value
            for registry, saved in ((module._parameters, params), (module._buffers, buffers),
                                    (module._modules, children)):  # fmt: skip
                if not _same_items(registry, saved):
                    registry.clear()
                    registry.update(saved)
            if module._non_persistent_buffers_set != non_persistent:
                module._non_persistent_buffers_set.clear()
                module._non_persistent_buffers_set.update(non_persistent)
        with torch.no_grad():
            for s in self.tensors:
                t = s.tensor
                if not _same_storage(t, s.data):  # t itself: its .data would be a new tensor object
                    t.data = s.data
                if s.value is not None and (s.value.device != s.data.device or not _equal(s.data, s.value)):
                    s.data.copy_(s.value)  # through .data: no version bump on the user's tensor
        for s in self.tensors:
            if isinstance(s.tensor, nn.Parameter):
                s.tensor.grad = s.grad
            if s.tensor.requires_grad != s.requires_grad:
                s.tensor.requires_grad_(s.requires_grad)


_MISSING = object()


def _same_items(current: dict[str, Any], saved: dict[str, Any]) -> bool:
    """Whether ``current`` holds exactly the saved objects under the same keys, in the same order (a check that
    runs in C: a scan restores every module of the model, and nearly always nothing changed)."""
    return current.keys() == saved.keys() and all(map(operator.is_, current.values(), saved.values()))


def _host_copy(data: torch.Tensor) -> torch.Tensor:
    return data.clone() if data.device.type == "cpu" else data.to("cpu", copy=True)


def _registries(
    module: nn.Module,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], set[str]]:
    return (
        dict(module._parameters),
        dict(module._buffers),
        dict(module._modules),
        set(module._non_persistent_buffers_set),
    )


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.is_meta or b.is_meta or a.layout != torch.strided or b.layout != torch.strided:
        return a is b
    return (
        a.data_ptr() == b.data_ptr()
        and a.dtype == b.dtype
        and a.device == b.device
        and a.shape == b.shape
        and a.stride() == b.stride()
    )


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    try:
        return bool(torch.equal(a, b))
    except Exception:  # a layout or tensor subclass torch.equal does not take: copy back to be sure
        return False


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
