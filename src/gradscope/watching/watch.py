"""``gradscope.watch``: the scan's per-layer statistics, recorded inside the user's own training loop.

API::

    with gradscope.watch(model, every=100, log="run.jsonl") as w:
        for batch in data:
            loss = loss_fn(model(batch), batch)
            loss.backward()
            w.step(loss)          # after backward, before optimizer.step(): the gradients the optimizer will use
            optimizer.step()
            optimizer.zero_grad()
    report = w.report()           # the same Report type as gradscope.scan

``w.step()`` is called once per optimizer step on every rank; with gradient accumulation, once after the last
micro-batch's backward. Once it has been called, only its calls count steps. Without it (``optimizer=`` or not),
PyTorch's global optimizer step hooks count and record the steps of the optimizer that steps the watched
parameters (``optimizer=``, else the first one seen doing so): from its pre-hook, or from its post-hook when the
gradients come from a closure (no backward before the step). The loss is then not logged.

Skipped steps: a gradient hook on one watched parameter (the sentinel) sees each backward start and whether the
gradients had been cleared since the last one. A step whose gradients the optimizer never applied (a GradScaler
overflow, a non-finite loss the loop skipped) is marked skipped in the log (``{"skipped_step": k}``) and left out
of the report, instead of being reported as non-finite: see ``_judge_last`` and the sentinel in
``_place_sentinel``.

Layers or parameters registered on the model after ``watch()`` started are not watched; global module and
parameter registration hooks notice them, and the next step warns once, naming them.

Why there: after ``loss.backward()`` DDP has already all-reduced (averaged) the gradients, and before
``optimizer.step()`` they are still the ones the step will apply (clipping and GradScaler unscaling that the user
does between backward and step come after ``w.step()``; call it after them to see clipped gradients).

Modes:
- ``param`` (default): no module hooks. On a recorded step, the parameter gradients' norms are taken in one fused
  call (``torch._foreach_norm``), stacked, and copied to the host once. Steps that are not recorded cost the
  counting (the hooks above: ~10 µs).
- ``full``: also the forward/backward signal statistics of ``scan`` (activation RMS and spread, signal RMS,
  saturation, dead units). The Recorder's hooks are attached only for the forward/backward of recorded steps
  (from the step before one to the step that records it) and removed otherwise; the recorded batch starts at the
  first forward, of the model or of a layer the loop calls directly (``model[0](x)``). A recorded step
  reads the hooks' numbers in one host copy and the parameter gradients by the same code as ``param`` (a second
  copy), so both modes log identical ``grad_rms``.

Weights change slowly: their RMS is read in the gradients' fused call on the first recorded step and then at most
every ``WEIGHT_EVERY`` (10) training steps; reports use the latest reading.

Distributed (torch.distributed initialised): parameter gradients are read after DDP's all-reduce, so they already
describe the global batch; sharded (DTensor, FSDP2) gradients are combined by summing squares over ranks. In full
mode the forward and signal statistics are local to each rank and are combined with one all_reduce per recorded
step: RMS by the mean of squares over ranks (exact when ranks have equal batches, as DistributedSampler gives), the
signal divided by the world size (the optimizer's gradient is the mean of the ranks' losses), spread, saturated and
dead fractions by their mean over ranks. Only rank 0 writes the log; every rank's ``report()`` is the same.

The log: one JSON line per recorded step (see ``gradscope.timeline``), written with a single ``os.write`` on a file
opened in append mode, so a crash leaves at most a torn last line, which the reader skips.

``on_nonfinite="raise"`` checks every step (one fused norm and one host sync per step, like ``every=1``) and raises
``NonFiniteGradientError`` naming the first layer, in forward order, whose gradient is not finite, once the
optimizer is about to apply it: from the optimizer's step pre-hook (before the update), or at the next ``w.step()``
(or exit) when no optimizer hook fired but the parameters changed. A skipped step does not raise. The step is
logged first. The default, ``"record"``, only records it.

Memory: the Recorder's per-batch lists are emptied after each recorded step, a recorded step keeps at most
``MAX_FORWARDS`` forwards, and only the last ``window`` steps are kept, so memory does not grow with steps.
"""

from __future__ import annotations

import math
import os
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..errors import ConfigError, GradscopeError, OutputError, ProbeError
from ..probes import batch_size_of
from ..recorder import Recorder, norms
from ..results import Report
from ..torchutil import EMBEDDINGS, dtype_name
from .timeline import (
    DEFAULT_WINDOW,
    SCHEMA,
    SKIPPED_LISTED,
    STATS,
    LayerMeta,
    Run,
    Skipped,
    Step,
    build_report,
    skip_line,
)


class _ForwardRecorder(Recorder):
    """The scan's hooks for activations and signals; parameter gradients are read by ``Watch._param_stats``
    (one code path for both modes, aware of sharded gradients)."""

    def _record_param_grads(self) -> None:
        return


WEIGHT_EVERY = 10  # training steps between two readings of the weights' RMS (they change slowly)
MAX_FORWARDS = 256  # forwards of one recorded step kept in full mode; more (a loop that never steps) start over


@dataclass
class _Last:
    """The last step counted by ``w.step()``, until the next one says whether the optimizer applied it."""

    step: int
    record: Step | None  # what was recorded of it (None: not a recorded step)
    nonfinite: bool
    versions: list[int]  # parameters' version counters when it was counted (non-finite steps only)
    opt_events: int  # optimizer step hooks seen by then
    raised: bool = False


class WatchMode(StrEnum):
    PARAM = "param"
    FULL = "full"


class OnNonFinite(StrEnum):
    RECORD = "record"
    RAISE = "raise"


class NonFiniteGradientError(GradscopeError):
    """A watched training step produced a non-finite gradient (``on_nonfinite="raise"``)."""

    def __init__(self, message: str, *, step: int, layer: str) -> None:
        super().__init__(message)
        self.step = step
        self.layer = layer


def watch(
    model: nn.Module,
    *,
    every: int = 1,
    log: str | os.PathLike[str] | None = None,
    mode: str = "param",
    optimizer: torch.optim.Optimizer | None = None,
    on_nonfinite: str = "record",
    window: int = DEFAULT_WINDOW,
    config: Config | None = None,
) -> Watch:
    """Watch ``model`` while the caller trains it; use as a context manager (see the module docstring)."""
    return Watch(
        model,
        every=every,
        log=log,
        mode=mode,
        optimizer=optimizer,
        on_nonfinite=on_nonfinite,
        window=window,
        config=config,
    )


class Watch:
    def __init__(
        self,
        model: nn.Module,
        *,
        every: int = 1,
        log: str | os.PathLike[str] | None = None,
        mode: str = "param",
        optimizer: torch.optim.Optimizer | None = None,
        on_nonfinite: str = "record",
        window: int = DEFAULT_WINDOW,
        config: Config | None = None,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"watch(every={every!r}): must be an integer >= 1 (record every Nth step)")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"watch(window={window!r}): must be an integer >= 1")
        self.mode = _choice(WatchMode, mode, "mode")
        self.on_nonfinite = _choice(OnNonFinite, on_nonfinite, "on_nonfinite")
        if not isinstance(model, nn.Module):
            raise ProbeError(f"watch needs a torch.nn.Module, got {type(model).__name__}")
        self.module = _unwrap(model)
        params = list(self.module.parameters())
        if not params:
            raise ProbeError(f"{type(self.module).__name__} has no parameters: there is no gradient to watch")
        if not any(p.requires_grad for p in params):
            raise ProbeError(
                f"{type(self.module).__name__} has no trainable parameters (all {len(params)} have "
                "requires_grad=False): nothing to watch"
            )
        self.log_path = None if log is None else Path(log)
        if self.log_path is not None:
            parent = self.log_path.parent
            if not parent.is_dir():
                raise ConfigError(
                    f"watch(log={str(log)!r}): directory {str(parent)!r} does not exist; create it "
                    "first or choose another path"
                )
            if self.log_path.is_dir():
                raise ConfigError(f"watch(log={str(log)!r}): is a directory; give a file name such as run.jsonl")
        self.every = every
        self.window = window
        self.config = config or Config()
        self.optimizer = optimizer
        self.steps_seen = 0
        self._recent: deque[Step] = deque(maxlen=window)
        self._recorder = _ForwardRecorder(self.module, saturation_derivative=self.config.diagnose.saturation_derivative)
        layers, taps = self._recorder.layers, self._recorder.taps
        if self.mode is WatchMode.PARAM:  # only layers with parameters: activations have no parameter gradient
            self._layers = [i for i, r in enumerate(layers) if not r.facts.is_activation]
        else:
            self._layers = list(range(len(layers)))
        # Flat list of trainable parameters with the layer each belongs to: the fused norm's input on every
        # recorded step.
        self._params: list[nn.Parameter] = []
        self._owner: list[int] = []
        for i in self._layers:
            for p in taps[i].trainable:
                self._params.append(p)
                self._owner.append(i)
        # Dense gradients of ordinary tensors on one device (checked once, on the parameters): _grads takes its
        # fast path while every one of them has a gradient.
        self._plain_grads = (
            len({p.device for p in self._params}) <= 1
            and all(p.layout is torch.strided and not hasattr(p, "placements") for p in self._params)
            and not any(
                isinstance(taps[i].module, EMBEDDINGS) and getattr(taps[i].module, "sparse", False)
                for i in self._layers
            )
        )
        self._numels = [p.numel() for p in self._params]
        self._weighted = [i for i in self._layers if taps[i].params]
        self._weight_params = [p for i in self._weighted for p in taps[i].params]
        self._sharded_weights = any(hasattr(p, "placements") for p in self._weight_params)
        # DTensor.numel() is the global size: the layout's counts are those of the full, unsharded weights
        self._weight_layout = [(i, len(taps[i].params), sum(p.numel() for p in taps[i].params)) for i in self._weighted]
        self._weight_step: int | None = None
        self._embeddings = [i for i in self._layers if isinstance(taps[i].module, EMBEDDINGS) and taps[i].trainable]
        self._grad_dtype: dict[int, torch.dtype] = {}
        self._armed = False
        self._started = False  # the armed step's first forward happened
        self._first_module: nn.Module | None = None  # the module whose forward started the recorded batch
        self._forwards = 0
        self._batch_size: int | None = None
        self._arm_hooks: list[Any] = []
        self._hooks: list[Any] = []  # global optimizer and registration hooks, the sentinel gradient hook
        self._fd: int | None = None
        self._meta_written = False
        self._closed = False
        self._entered = False
        # How steps are counted (README "Where w.step() goes"): by w.step() once it has been called, else by the
        # optimizer that steps the watched parameters (its step pre-hook, or post-hook for closure optimizers).
        self._explicit = False
        self._auto_steps = 0
        self._clock: weakref.ref[torch.optim.Optimizer] | None = None
        self._opt_cache: weakref.WeakKeyDictionary[torch.optim.Optimizer, tuple[int, bool]] = (
            weakref.WeakKeyDictionary()
        )
        self._deferred = False  # a pre-hook came before any backward (a closure): count at the post-hook
        self._in_step = False  # between an optimizer's step pre- and post-hook (a closure's backwards)
        self._opt_events = 0  # step hooks of optimizers holding watched parameters
        self._backward_pending = False  # a backward ran since the last optimizer step (the sentinel saw it)
        self._reset_since = False  # a backward started from cleared gradients since the last w.step()
        self._sentinel: nn.Parameter | None = None
        self._sentinel_placed = False
        self._last: _Last | None = None
        self.skipped = 0
        self._skipped_steps: list[int] = []
        self._module_names = {id(m): name for name, m in self.module.named_modules()}
        self._param_ids = {id(p) for p in self.module.parameters()}
        self._added: dict[str, None] = {}  # layers/parameters registered after watch() started, not yet warned
        self._warned: set[str] = set()
        dist = torch.distributed
        self._dist = dist.is_available() and dist.is_initialized()
        self.world_size = dist.get_world_size() if self._dist else 1
        self.rank = dist.get_rank() if self._dist else 0

    # -- context manager ---------------------------------------------------------------------------------------
    def __enter__(self) -> Watch:
        if self._entered:  # once: a second enter would truncate the log
            return self
        self._entered = True
        try:
            if self.log_path is not None and self.rank == 0:
                try:
                    self._fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
                except OSError as exc:
                    raise OutputError(f"cannot write {self.log_path}: {exc.strerror or exc}") from None
            from torch.nn.modules import module as module_hooks
            from torch.optim import optimizer as optimizer_hooks

            self._hooks += [
                optimizer_hooks.register_optimizer_step_pre_hook(self._optimizer_pre_hook),
                optimizer_hooks.register_optimizer_step_post_hook(self._optimizer_post_hook),
                module_hooks.register_module_module_registration_hook(self._module_registered),
                module_hooks.register_module_parameter_registration_hook(self._parameter_registered),
            ]
            self._place_sentinel(self._params[-1] if self._params else None)
            self._arm_for(self.steps_seen)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(judge=exc_type is None)

    def close(self, *, judge: bool = True) -> None:
        """Stop watching: the last step is judged (skipped or not; in ``on_nonfinite="raise"`` mode a non-finite
        step that was applied raises here, after cleaning up, unless ``judge=False``), hooks are removed and the
        log is closed. Later ``w.step()`` calls are recorded in memory only."""
        error: NonFiniteGradientError | None = None
        if not self._closed and self._entered:
            try:
                if self._explicit:
                    self._judge_last()
                elif self._backward_pending and self._sentinel is not None and self._sentinel.grad is None:
                    self._skip(self._count_skipped())  # the last backward's gradients were cleared, never applied
            except NonFiniteGradientError as exc:
                error = exc
        self._disarm()
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._sentinel = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._closed = True  # later steps are still recorded in memory (w.report()), without log or hooks
        if error is not None and judge:
            raise error

    # -- per step ----------------------------------------------------------------------------------------------
    def step(self, loss: torch.Tensor | None = None) -> None:
        """Call once per training step, after backward and before ``optimizer.step()``. Outside a ``with`` block
        the first call opens the log (and full mode's hooks arm from the next recorded step); ``close()`` ends it.

        From the first call on, steps are counted by these calls only (the optimizer's hooks then only tell
        whether it applied a step). A first call right after an optimizer step that was counted, with no
        backward in between, is that same step: it is not counted again."""
        if not self._entered:
            self.__enter__()
        if not self._explicit:
            self._explicit = True
            if self._auto_steps and not self._backward_pending and not self._closed:
                return  # w.step() after optimizer.step(): the hook already counted this step
        self._judge_last()
        self._last = self._count(loss)

    def _count(self, loss: torch.Tensor | None) -> _Last:
        """A training step ends here: record it (every Nth) or check it (``on_nonfinite="raise"``)."""
        self._warn_added()
        if not self._sentinel_placed:
            self._place_sentinel(next((p for p in reversed(self._params) if p.grad is not None), None))
        k = self.steps_seen
        step = None
        if k % self.every == 0:
            step = self._record(k, loss)
        elif self.on_nonfinite is OnNonFinite.RAISE:
            step = self._check_finite(k)
        nonfinite = step is not None and _nonfinite(step)
        versions = [p._version for p in self._params] if nonfinite else []
        self._reset_since = False
        self.steps_seen = k + 1
        self._arm_for(self.steps_seen)
        return _Last(k, step, nonfinite, versions, self._opt_events)

    def _judge_last(self) -> None:
        """Was the step counted by the last ``w.step()`` applied by the optimizer? Not when no optimizer step hook
        fired since and either its values were not finite and no parameter changed (a GradScaler overflow, a
        non-finite loss the loop skipped), or its gradients were cleared (once some optimizer step has been
        seen). A skipped step is marked in the log and left out of the report; an applied non-finite one raises
        with ``on_nonfinite="raise"``."""
        last, self._last = self._last, None
        if last is None:
            return
        if self._opt_events != last.opt_events:
            applied = True
        elif last.nonfinite:
            applied = any(p._version != v for p, v in zip(self._params, last.versions, strict=True))
        else:
            applied = not (self._opt_events > 0 and self._reset_since)
        if not applied:
            self._skip(last.step)
        elif last.nonfinite and not last.raised and self.on_nonfinite is OnNonFinite.RAISE and last.record:
            last.raised = True
            self._raise_if_nonfinite(last.record)

    def _count_skipped(self) -> int:
        k = self.steps_seen
        self.steps_seen = k + 1
        self._arm_for(self.steps_seen)
        return k

    def _skip(self, k: int) -> None:
        self.skipped += 1
        if len(self._skipped_steps) < SKIPPED_LISTED:
            self._skipped_steps.append(k)
        if self._recent and self._recent[-1].step == k:
            self._recent.pop()
        if self._fd is not None:
            self._write_line(skip_line(k))

    # -- counting without w.step(): optimizer and backward hooks -----------------------------------------------
    def _watches(self, opt: torch.optim.Optimizer) -> bool:
        """Whether ``opt`` steps watched parameters (``optimizer=``: only that one)."""
        if self.optimizer is not None:
            return opt is self.optimizer
        groups = opt.param_groups
        cached = self._opt_cache.get(opt)
        if cached is None or cached[0] != len(groups):
            ids = self._param_ids
            cached = (len(groups), any(id(p) in ids for g in groups for p in g["params"]))
            self._opt_cache[opt] = cached
        return cached[1]

    def _is_clock(self, opt: torch.optim.Optimizer) -> bool:
        """The first optimizer seen stepping watched parameters counts the steps (a second one, as in a GAN,
        does not: pass ``optimizer=`` or call ``w.step()`` to choose)."""
        if self._clock is None or self._clock() is None:
            self._clock = weakref.ref(opt)
        return self._clock() is opt

    def _optimizer_pre_hook(self, opt: torch.optim.Optimizer, *_: Any) -> None:
        if self._closed or not self._watches(opt):
            return
        self._opt_events += 1
        if self._explicit:
            self._raise_if_applied_nonfinite()
        elif self._is_clock(opt):
            if self._backward_pending:
                self._auto_count()
            else:  # no backward yet: an optimizer that computes its gradients in a closure (LBFGS, Lightning)
                self._deferred = True
        self._in_step = True  # (not when raising above: there is no post-hook then)

    def _optimizer_post_hook(self, opt: torch.optim.Optimizer, *_: Any) -> None:
        if self._closed or not self._watches(opt):
            return
        self._opt_events += 1
        self._in_step = False
        if self._explicit:
            self._raise_if_applied_nonfinite()
        elif self._deferred and self._is_clock(opt):
            self._auto_count()

    def _auto_count(self) -> None:
        self._deferred = False
        self._backward_pending = False
        self._auto_steps += 1
        last = self._count(None)
        if last.record is not None and last.nonfinite and self.on_nonfinite is OnNonFinite.RAISE:
            self._raise_if_nonfinite(last.record)  # from the pre-hook: before the optimizer applies it

    def _raise_if_applied_nonfinite(self) -> None:
        last = self._last
        if last is not None and last.nonfinite and not last.raised and self.on_nonfinite is OnNonFinite.RAISE:
            last.raised = True
            assert last.record is not None
            self._raise_if_nonfinite(last.record)

    def _place_sentinel(self, param: nn.Parameter | None) -> None:
        """A gradient hook on one watched parameter sees each backward start: whether the gradients had been
        cleared (``zero_grad()``) since the last one tells a skipped step from gradient accumulation. Placed at
        ``watch()`` on the last parameter, moved on the first step to one that has a gradient."""
        self._sentinel_placed = param is not None and param.grad is not None
        if param is None or param is self._sentinel or self._closed:
            return
        if self._sentinel is not None:
            self._hooks.pop().remove()  # the sentinel's handle is always the last one
        self._sentinel = param
        ref = weakref.ref(param)

        def backward_started(grad: torch.Tensor) -> None:
            p = ref()
            if p is not None and p.grad is None:
                if not self._explicit and self._backward_pending and not self._in_step:
                    self._skip(self._count_skipped())  # the previous backward's gradients were never applied
                self._reset_since = True
            self._backward_pending = True

        self._hooks.append(param.register_hook(backward_started))  # type: ignore[no-untyped-call]

    # -- parameters and layers added after watch() ---------------------------------------------------------------
    def _module_registered(self, module: nn.Module, name: str, submodule: nn.Module | None) -> None:
        parent = self._module_names.get(id(module))
        if parent is not None and submodule is not None and id(submodule) not in self._module_names:
            self._added[f"{parent}.{name}" if parent else name] = None

    def _parameter_registered(self, module: nn.Module, name: str, param: nn.Parameter) -> None:
        parent = self._module_names.get(id(module))
        if parent is not None and id(param) not in self._param_ids:
            self._added[f"{parent}.{name}" if parent else name] = None

    def _warn_added(self) -> None:
        if not self._added:
            return
        names = [n for n in self._added if n not in self._warned]
        self._added.clear()
        if not names:
            return
        self._warned.update(names)
        listed = ", ".join(repr(n) for n in names)
        warnings.warn(
            f"gradscope.watch: {listed} {'was' if len(names) == 1 else 'were'} added to the model after watch() "
            "started and {} not watched; start watch() once the model is complete".format(
                "is" if len(names) == 1 else "are"
            ),
            UserWarning,
            stacklevel=4,  # w.step()'s caller
        )

    # -- full mode's hooks --------------------------------------------------------------------------------------
    def _arm_for(self, k: int) -> None:
        if self.mode is WatchMode.FULL and k % self.every == 0 and not self._closed:
            self._arm()
        else:
            self._disarm()

    def _arm(self) -> None:
        if self._armed:
            return
        self._recorder.attach()
        self._started = False

        def pre(module: nn.Module, args: Any, kwargs: Any) -> None:
            # The root's pre-hook runs first when the model is called; the layers' own when the loop calls them
            # directly (model[0](x)). The first forward of the recorded step starts its batch; later ones
            # (gradient accumulation) add to it, up to MAX_FORWARDS (a loop that never steps starts over).
            if self._started:
                if module is not self._first_module:
                    return
                self._forwards += 1
                if self._forwards <= MAX_FORWARDS:
                    return
            self._started = True
            self._first_module = module
            self._forwards = 1
            self._batch_size = batch_size_of((args, kwargs))
            self._recorder.start_batch(self._batch_size)

        modules = [self.module] + [tap.module for tap in self._recorder.taps if tap.module is not self.module]
        for module in dict.fromkeys(modules):
            self._arm_hooks.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        self._armed = True

    def _disarm(self) -> None:
        self._recorder.detach()
        for handle in self._arm_hooks:
            handle.remove()
        self._arm_hooks.clear()
        self._armed = False

    def _grads(self) -> tuple[list[torch.Tensor], list[int], list[int], bool]:
        """(gradients, owning layer of each, element count of each as the optimizer sees it, sharded?).

        Sharded (DTensor) gradients are this rank's shard; their count is the full parameter's (``numel`` of a
        DTensor is global), since their squares are summed over ranks."""
        grads = [p.grad for p in self._params]
        if self._plain_grads and all(g is not None for g in grads):  # the common case: no per-parameter Python work
            return grads, self._owner, self._numels, False  # type: ignore[return-value]
        out: list[torch.Tensor] = []
        owners: list[int] = []
        numels: list[int] = []
        sharded = False
        for g, owner in zip(grads, self._owner, strict=True):
            if g is None:
                continue
            numel = g.numel()
            if hasattr(g, "placements"):  # DTensor (FSDP2): this rank's shard
                sharded = sharded or any(pl.is_shard() or pl.is_partial() for pl in g.placements)
                g = _local(g)
            if g.is_sparse:
                g = g.coalesce().values()
                numel = g.numel()
            out.append(g)
            owners.append(owner)
            numels.append(numel)
        return out, owners, numels, sharded

    def _check_finite(self, k: int) -> Step | None:
        """A step that is not recorded, checked for ``on_nonfinite="raise"``: recorded when not finite."""
        grads = self._grads()[0]
        if not grads:
            return None
        total = torch.stack([n.float() for n in norms(grads)]).sum()
        if not bool(torch.isfinite(total)):  # one host sync per step: the price of on_nonfinite="raise"
            return self._record(k, None)
        return None

    def _record(self, k: int, loss: torch.Tensor | None) -> Step:
        """Read step ``k``'s statistics, log them and keep them in the window. (Whether a non-finite step raises
        is decided when it is known to have been applied: ``_judge_last``, the optimizer hooks.)"""
        layers = self._recorder.layers
        stats: dict[int, dict[str, float]] = {i: {} for i in self._layers}
        if self.mode is WatchMode.FULL and self._started:
            self._recorder.end_batch()  # activations and signals: one host sync
            self._started = False  # the next forward starts the next recorded batch
            for i, r in enumerate(layers):
                for stat in STATS:
                    values = getattr(r, stat)
                    if values and i in stats:
                        stats[i][stat] = values[-1]
                    values.clear()  # every record, the extra calls of a shared module too: memory stays flat
            self._combine_ranks(stats)
        # parameter gradients (and weights, loss): the same code in both modes, sharding-aware; one host sync
        loss_value, weight_rms = self._param_stats(stats, loss, k)
        step = Step(k, {layers[i].name: s for i, s in stats.items()}, weight_rms, loss_value)
        if self._fd is not None:
            self._write(step)
        self._recent.append(step)
        return step

    def _param_stats(
        self, stats: dict[int, dict[str, float]], loss: torch.Tensor | None, step: int, with_grads: bool = True
    ) -> tuple[float | None, dict[str, float]]:
        """Gradient and weight RMS per layer (and the loss): one fused norm call, one stack, one host copy.

        Weights change slowly: their RMS is read on the first recorded step and then on recorded steps at least
        ``WEIGHT_EVERY`` training steps after the last reading (the report uses the latest)."""
        layers = self._recorder.layers
        grads, owners, numels, sharded = self._grads() if with_grads else ([], [], [], False)
        with_weights = self._weight_step is None or step - self._weight_step >= WEIGHT_EVERY
        weights = [_local(p) for p in self._weight_params] if with_weights else []
        sharded = sharded or (with_weights and self._sharded_weights)
        extra: list[torch.Tensor] = []
        if with_grads:
            for i in self._embeddings:  # rows of tokens absent from the batch are not counted (as scan does)
                g = self._recorder.taps[i].trainable[0].grad
                if g is not None and not g.is_sparse and g.dim() == 2:
                    extra.append(torch.count_nonzero(torch.linalg.vector_norm(_local(g), dim=1)).float())
        if loss is not None:
            extra.append(loss.detach().float().reshape(()))
        tensors = [*grads, *weights]
        if not tensors and not extra:
            return None, {}
        parts = []
        if tensors:
            with torch.no_grad():
                parts.append(torch.stack(_fusednorms(tensors, self._plain_grads)).square())
        if extra:
            device = parts[0].device if parts else extra[0].device
            parts.append(torch.stack([e.to(device) for e in extra]))
        packed = torch.cat(parts) if len(parts) > 1 else (parts[0] if parts else torch.zeros(0))
        n = len(tensors)
        if self._dist and self.world_size > 1 and (sharded or loss is not None):
            packed = self._all_reduce_sum(packed)
            if not sharded:  # replicated (DDP) gradients and weights: the sum over ranks counted them world times
                packed[:n] /= self.world_size
        host = packed.cpu().tolist()  # the one host sync of a recorded step
        sumsq: dict[int, float] = {}
        count: dict[int, float] = {}
        for owner, numel, v in zip(owners, numels, host, strict=False):
            sumsq[owner] = sumsq.get(owner, 0.0) + v
            count[owner] = count.get(owner, 0.0) + numel
        if grads and not self._grad_dtype:
            for owner, g in zip(owners, grads, strict=True):
                self._grad_dtype.setdefault(owner, g.dtype)
        tail = host[n:]
        touched_rows = tail[: len(extra) - (loss is not None)]
        for i, touched in zip(self._embeddings, touched_rows, strict=False):
            weight = self._recorder.taps[i].trainable[0]
            count[i] = count.get(i, 0.0) - weight.numel() + touched * weight.shape[1]
        for owner, total in sumsq.items():
            c = count[owner]
            stats[owner]["grad_rms"] = math.sqrt(total / c) if c > 0 else 0.0
        weight_rms: dict[str, float] = {}
        if with_weights:
            self._weight_step = step
            pos = len(grads)
            for i, size, numel in self._weight_layout:
                weight_rms[layers[i].name] = math.sqrt(sum(host[pos : pos + size]) / max(numel, 1))
                pos += size
        loss_value = None
        if loss is not None:
            loss_value = tail[-1] / (self.world_size if self._dist and self.world_size > 1 else 1)
        return loss_value, weight_rms

    def _combine_ranks(self, stats: dict[int, dict[str, float]]) -> None:
        """Full mode under torch.distributed: forward and signal statistics are per rank; one all_reduce."""
        if not (self._dist and self.world_size > 1):
            return
        local = ("signal_rms", "activation_rms", "activation_std", "saturated_fraction", "dead_fraction")
        flat: list[float] = []
        for i in self._layers:
            for stat in local:
                v = stats[i].get(stat)
                present = v is not None
                v = v if v is not None else 0.0
                flat += [v * v if stat.endswith("_rms") else v, 1.0 if present else 0.0]
        device = self._params[0].device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
        reduced = self._all_reduce_sum(torch.tensor(flat, dtype=torch.float64, device=device)).cpu().tolist()
        pos = 0
        for i in self._layers:
            for stat in local:
                total, present = reduced[pos], reduced[pos + 1]
                pos += 2
                if present == 0:
                    continue
                if stat.endswith("_rms"):
                    value = math.sqrt(total / present) if math.isfinite(total) else math.nan
                    if stat == "signal_rms":
                        value /= self.world_size
                else:
                    value = total / present
                stats[i][stat] = value

    def _all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if not (self._dist and self.world_size > 1):
            return t
        if torch.distributed.get_backend() != "nccl" and t.device.type != "cpu":
            t = t.cpu()
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    def _raise_if_nonfinite(self, step: Step) -> None:
        layers = self._recorder.layers
        ordered = sorted(self._layers, key=lambda i: (layers[i].order < 0, layers[i].order, i))
        for i in ordered:
            s = step.layers.get(layers[i].name, {})
            bad = [stat for stat in ("grad_rms", "signal_rms") if stat in s and not math.isfinite(s[stat])]
            if bad:
                name = layers[i].name or "(root)"
                raise NonFiniteGradientError(
                    f"non-finite gradient at step {step.step} in layer '{name}' ({layers[i].type_name}): "
                    f"{bad[0].replace('_', ' ')} is {s[bad[0]]}; inspect that layer's inputs and the learning rate",
                    step=step.step,
                    layer=name,
                )

    # -- output ------------------------------------------------------------------------------------------------
    def _write(self, step: Step) -> None:
        meta = None if self._meta_written else self.meta()
        types = {self._recorder.layers[i].name: self._recorder.layers[i].type_name for i in self._layers}
        self._write_line(step.to_json(meta, types))
        self._meta_written = True

    def _write_line(self, line: str) -> None:
        assert self._fd is not None
        view = memoryview((line + "\n").encode())
        while view:  # one write() in practice; a short write (full disk, signal) is continued, never reordered
            written = os.write(self._fd, view)
            view = view[written:]

    def layer_metas(self) -> tuple[LayerMeta, ...]:
        out = []
        for i in self._layers:
            r = self._recorder.layers[i]
            grad_dtype = self._grad_dtype.get(i)
            out.append(
                LayerMeta(
                    r.facts,
                    order=r.order if self.mode is WatchMode.FULL else i,  # param mode has no hooks: definition order
                    output_shape=r.output_shape,
                    output_needs_grad=r.output_needs_grad and self.mode is WatchMode.FULL,
                    grad_dtype=dtype_name(grad_dtype) if grad_dtype is not None else r.grad_dtype,
                    signal_dtype=r.signal_dtype,
                )
            )
        return tuple(out)

    def meta(self) -> dict[str, Any]:
        params = list(self.module.parameters())
        dtype = next((p.dtype for p in params if p.is_floating_point()), torch.float32)
        return {
            "schema": SCHEMA,
            "model": type(self.module).__name__,
            "mode": self.mode.value,
            "every": self.every,
            "world_size": self.world_size,
            "window": self.window,
            "batch_size": self._batch_size,
            "device": str(params[0].device),
            "dtype": str(dtype).replace("torch.", ""),
            "parameters": sum(p.numel() for p in params),
            "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
            "layers": [m.to_dict() for m in self.layer_metas()],
        }

    @property
    def steps(self) -> tuple[Step, ...]:
        """The last ``window`` recorded steps."""
        return tuple(self._recent)

    def run(self) -> Run:
        skipped = Skipped(self.skipped, tuple(self._skipped_steps))
        return Run(self.meta(), self.layer_metas(), self.steps, skipped=skipped)

    def report(self, *, target: str | None = None) -> Report:
        """The Report of the last ``window`` recorded steps: per-layer medians, diagnosed and advised as ``scan``
        does. The same function ``gradscope report run.jsonl`` uses, so both give the same findings."""
        if not self._recent:
            skipped = (
                f" ({self.skipped} step(s) were skipped: the optimizer did not apply them)" if self.skipped else ""
            )
            raise ProbeError(
                f"watch recorded no step yet{skipped}: step the optimizer, or call w.step() after loss.backward()"
            )
        if not any(s.measured for s in self._recent):
            raise ProbeError(
                f"watch measured no layer in its last {len(self._recent)} recorded step(s): no gradient existed "
                "when they were recorded (call w.step() after loss.backward(), before optimizer.zero_grad())"
            )
        return build_report(self.run(), window=self.window, config=self.config, target=target)


def _nonfinite(step: Step) -> bool:
    """Whether a recorded step has a non-finite gradient, signal or loss."""
    if step.loss is not None and not math.isfinite(step.loss):
        return True
    return any(not math.isfinite(v) for stats in step.layers.values() for v in stats.values())


def _choice(enum: type[StrEnum], value: Any, name: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)
        raise ConfigError(f"watch({name}={value!r}): must be one of {allowed}") from None


def _fusednorms(tensors: list[torch.Tensor], plain: bool) -> list[torch.Tensor]:
    """Float32 L2 norms in one fused call; the checks ``_norms`` makes are skipped when known to pass."""
    if plain:
        return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))
    return [n.float() for n in norms(tensors)]


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a DTensor (FSDP2 shards); any other tensor as is."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) and hasattr(t, "placements") else t


def _unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / DataParallel / torch.compile wrappers: names match a single-process run."""
    seen = 0
    while seen < 8:
        seen += 1
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
            continue
        wrapped = getattr(model, "module", None)
        if type(model).__name__ in ("DistributedDataParallel", "DataParallel") and isinstance(wrapped, nn.Module):
            model = wrapped
            continue
        break
    return model


Hook = Callable[..., None]
__all__ = ["watch", "Watch", "WatchMode", "OnNonFinite", "NonFiniteGradientError"]
