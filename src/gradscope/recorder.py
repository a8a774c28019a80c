"""The hook context manager: per-layer gradient and activation statistics with one host sync per batch.

What counts as a layer:
- every module that owns parameters directly (``parameters(recurse=False)``), including modules that also have
  children (``nn.MultiheadAttention`` owns ``in_proj_weight`` and has ``out_proj``); a parameter shared by several
  modules (tied weights) is counted once, under the first owner in ``named_modules()`` order;
- every elementwise activation module (``nn.Tanh``, ``nn.ReLU``, ...): they own nothing, but their outputs show where
  the signal dies (saturation, dead units) and the backward signal passing through them.

Hooks keep numbers, never tensors: each hook reduces what it sees to 0-d float32 tensors on the model's device and
appends them to one flat list; ``end_batch`` stacks that list and copies it to the host once. No ``.item()`` in a
hook. Handles are registered inside ``try`` and all removed in ``finally``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.nn import grad as conv_grad
from torch.nn.utils import parametrize

from .records import LayerFacts, LayerKind, LayerRecord, PositionProfile
from .torchutil import EMBEDDINGS, RECTIFYING, SATURATING, activation_name, dtype_name, first_float_tensor, layer_facts


def _per_call(module: nn.Module) -> bool:
    """Whether the parameter gradient of each call is computed when the module runs several times in one forward
    pass (Linear and convolutions; a transposed convolution, a norm or a recurrent layer keeps its total)."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.modules.conv._ConvNd) and not module.transposed)


# The spread, saturation and dead-unit statistics read at most this many elements of a layer's output per batch
# (a fixed stride; README "Overhead"). Sums of squares and gradients always read everything.
FORWARD_SAMPLE = 16_384

# Outputs and output gradients up to this many elements are kept (a reference, never a copy) and reduced
# together with the others of the same shape: one stacked computation instead of a handful of tiny ops per
# layer, which is what deep narrow networks pay for in Python and kernel launches. Outputs are reduced when the
# backward pass starts (autograd keeps most of them alive until then anyway), gradients at the end of the batch;
# either list is reduced early once it holds ``PENDING_LIMIT`` elements, so what it keeps alive is bounded.
SMALL = 16_384
PENDING_LIMIT = 1 << 20
# The stacked reductions work on at most this many elements at once, in two buffers reused from batch to batch.
STACKED = 1 << 18


@dataclass(frozen=True)
class Tap:
    """The torch side of a layer: the module the hooks sit on and the parameters counted for it."""

    module: nn.Module
    params: tuple[nn.Parameter, ...]  # own parameters counted here (tied ones only at their first owner)
    trainable: tuple[nn.Parameter, ...]


# One entry of the flat per-batch list: which statistic, for which records, and the host-side numbers needed to
# turn the device values into the statistic (element counts are known from shapes without a sync). A statistic
# computed for many layers at once (a stacked group of small outputs) is one entry with a value per layer; a
# position profile is one entry of ``size`` values for one layer.
@dataclass(frozen=True)
class _Entry:
    stat: str
    layers: tuple[int, ...]
    numels: tuple[float, ...]
    size: int


# Statistics whose device value is a norm: summed as squares on the host.
_NORMS = frozenset({"grad_norm", "signal_norm", "call_grad_norm"})
_STATS = ("act_sumsq", "act_std", "saturated", "alive", "signal_norm", "grad_norm", "call_grad_norm", "grad_rows")


def model_facts(model: nn.Module) -> dict[str, LayerFacts]:
    """The facts of every layer of ``model``, by name, without running it."""
    _, layers = Recorder._discover(model)
    return {layer.name: layer.facts for layer in layers}


class Recorder:
    """``with Recorder(model) as rec:`` then per batch ``rec.start_batch()``, forward, backward, ``rec.end_batch()``.

    A module that runs several times in one forward pass (a block called in a loop, a shared activation) gets one
    record per call, named ``name#1``, ``name#2``, …, so each depth position is measured like its unrolled twin; the
    parameter gradient of each call of a Linear/Conv layer is computed from that call's input and output gradient.
    """

    def __init__(self, model: nn.Module, *, saturation_derivative: float = 0.05, positions: bool = False) -> None:
        self.model = model
        self.saturation_derivative = saturation_derivative
        self.taps, self.layers = self._discover(model)
        self.positions = positions  # measure the gradient reaching each input position (a sequence model)
        self.profile: PositionProfile | None = None
        self._profile_record = -1  # the record whose output gradient is profiled by position
        self._calls: list[list[int]] = [[i] for i in range(len(self.layers))]  # module → its call records
        self._module: list[int] = list(range(len(self.layers)))  # record → the module it measures
        self._call_index = [0] * len(self.layers)  # calls seen so far in this batch, per module
        self._trainable = [(i, tap) for i, tap in enumerate(self.taps) if tap.trainable]
        self._handles: list[Any] = []
        self._values: list[torch.Tensor] = []
        self._entries: list[_Entry] = []
        # small outputs, reduced together (_flush_outputs): record, output, the values to measure (the output, or
        # in batch 0 a copy of it), the output's version then (an in-place op after the layer changes what a
        # reference sees), where its samples are, how saturation is counted
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor, int, int | None, str]] = []
        self._pending_size = 0
        self._pending_grads: list[tuple[int, float, torch.Tensor]] = []  # small output gradients, likewise
        self._pending_grads_size = 0
        # Each weighted call's inputs, for the per-call weight gradient of a module called several times. Held
        # here rather than in the backward hook's closure (a graph node would keep them to the end of backward);
        # those of modules called once are dropped when backward starts, so autograd frees them as it goes.
        self._call_inputs: dict[int, Any] = {}
        self._in_forward = True
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}  # _scratch
        self._inplace: set[int] = set()  # records whose output a later in-place op changed: reduced at once
        self._expects_signal: set[int] = set()  # records whose output needed a gradient in this batch
        self._batch = -1
        self._order = 0
        self._batch_size: int | None = None
        self._device: torch.device | None = None
        self.batches_recorded = 0
        self.losses: list[float] = []
        # id(parameter) → its largest gradient norm over the batches: whether a gradient reaches it at all, which
        # one batch cannot say when stochastic depth drops the whole batch's branch (the gate search reads it)
        self.largest_grad_norm: dict[int, float] = {}
        self._grad_params: list[nn.Parameter] = []  # this batch's "grad_norm" values, in order

    # -- discovery ---------------------------------------------------------------------------------------------
    @staticmethod
    def _discover(model: nn.Module) -> tuple[list[Tap], list[LayerRecord]]:
        owner: dict[int, str] = {}
        taps: list[Tap] = []
        layers: list[LayerRecord] = []
        for name, module in model.named_modules():
            if ".parametrizations" in f".{name}":
                continue  # counted with the module they parametrize (below)
            direct = [p for p in module._parameters.values() if p is not None]  # parameters(recurse=False), faster
            if parametrize.is_parametrized(module):
                # weight_norm, spectral_norm, gradscope's Rescale: the trainable tensor is the parametrization's
                # ``original``; it belongs to this module, whose name stays the one the user knows.
                direct += list(module.parametrizations.parameters())
            own = [p for p in direct if id(p) not in owner]
            shared = [owner[id(p)] for p in direct if id(p) in owner]
            for p in own:
                owner[id(p)] = name
            if direct or activation_name(module) is not None:
                trainable = tuple(p for p in own if p.requires_grad)
                taps.append(Tap(module, tuple(own), trainable))
                facts = layer_facts(
                    name,
                    module,
                    parameters=sum(p.numel() for p in own),
                    trainable=bool(trainable),
                    shares_parameters_with=shared[0] if shared else None,
                )
                layers.append(LayerRecord(facts))
        return taps, layers

    # -- context manager ---------------------------------------------------------------------------------------
    def __enter__(self) -> Recorder:
        self.attach()
        self._compute_weight_rms()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def attach(self) -> None:
        """Register the forward hooks as ``__enter__`` does, without reading the weights: for callers that record
        only some steps of a training run (``gradscope.watch``). Does nothing when already attached."""
        if self._handles:
            return
        try:
            for index, tap in enumerate(self.taps):
                # prepend: see the module's own output, before any other hook (a remedy's) replaces it
                self._handles.append(tap.module.register_forward_hook(self._forward_hook(index), prepend=True))
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        """Remove the hooks and keep what was recorded (``close`` also drops the batch in progress)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def close(self) -> None:
        self.detach()
        self._drop_batch()
        self._buffers.clear()

    def _drop_batch(self) -> None:
        self._call_inputs.clear()
        self._in_forward = True
        self._values.clear()
        self._entries.clear()
        self._pending.clear()
        self._pending_size = 0
        self._pending_grads.clear()
        self._pending_grads_size = 0

    # -- per batch ---------------------------------------------------------------------------------------------
    def start_batch(self, batch_size: int | None) -> None:
        self._batch += 1
        self._batch_size = batch_size
        self._expects_signal.clear()
        self._drop_batch()
        self._call_index = [0] * len(self.taps)

    def add_loss(self, loss: torch.Tensor) -> None:
        self._append("loss", -1, loss.detach().float())

    def end_batch(self) -> None:
        """Reduce parameter gradients, then read every statistic of this batch from the device in one copy."""
        self._call_inputs.clear()  # calls whose output got no gradient: nothing keeps a tensor past the batch
        self._flush_outputs()
        self._flush_grads()
        self._record_param_grads()
        host: list[float] = []
        if self._values:
            # the one host sync of the batch
            dtype = torch.float64 if any(v.dtype == torch.float64 for v in self._values) else torch.float32
            host = torch.cat([v.reshape(-1).to(dtype) for v in self._values]).cpu().tolist()
        self._accumulate(host)
        self._values.clear()
        self._entries.clear()
        self.batches_recorded += 1

    # -- hooks -------------------------------------------------------------------------------------------------
    def _record_for_call(self, index: int, call: int) -> int:
        """The record of call ``call`` (counted from 0) of module ``index``: the module's own for its first call,
        a new one (batch 0) or the one made then (later batches) for the next calls."""
        calls = self._calls[index]
        if call < len(calls):
            return calls[call]
        if self._batch > 0:
            return -1  # a call batch 0 did not make (data-dependent control flow): not measured
        first = self.layers[index].facts
        facts = replace(first, name=f"{first.name}#{call + 1}", shares_parameters_with=f"{first.name}#1")
        if not _per_call(self.taps[index].module):  # judged by its output gradient, like a tied-weight layer
            facts = replace(facts, parameters=0, trainable=False)
        self.layers.append(LayerRecord(facts, grad_dtype=self.layers[index].grad_dtype))
        self._module.append(index)
        calls.append(len(self.layers) - 1)
        return calls[-1]

    def _forward_hook(self, index: int) -> Callable[..., None]:
        module = self.taps[index].module
        kind = _saturation_kind(module)
        weighted = _per_call(module) and bool(self.taps[index].trainable)

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            # the hot path of a scan: runs for every layer of every batch, so it does the least it can
            counts = self._call_index
            call = counts[index]
            counts[index] = call + 1
            record = index if call == 0 else self._record_for_call(index, call)
            if record < 0:
                return
            out = output if type(output) is torch.Tensor else first_float_tensor(output)
            if self._batch == 0:
                self._first_sight(record, out)
            # nothing to measure: no float output, or a zero-width one (Linear(32, 0))
            if out is None or not out.is_floating_point() or out.numel() == 0:
                return
            self._observe(record, out, kind)
            if out.requires_grad:
                if weighted:
                    self._call_inputs[record] = inputs
                self._watch_signal(index, record, out)

        return hook

    def _first_sight(self, record: int, out: torch.Tensor | None) -> None:
        """Batch 0: the execution order, the output shape, and whether this is the first layer of a sequence."""
        layer = self.layers[record]
        if layer.order >= 0:
            return
        layer.order = self._order
        self._order += 1
        if self._device is None and out is not None:
            self._device = out.device
        layer.output_shape = tuple(out.shape) if out is not None else None
        if self.positions and layer.order == 0 and out is not None:  # the first layer to run
            self.profile = _profile_axis(layer, out, self._batch_size)
            self._profile_record = record if self.profile is not None else -1

    def _observe(self, record: int, out: torch.Tensor, kind: str) -> None:
        """Queue a small output for the stacked reduction; reduce a large one (sampled) at once."""
        numel = out.numel()
        batch_dim = self._batch_dim(out)
        detached = out.detach()
        if numel <= SMALL and batch_dim != 1 and record not in self._inplace:
            # Batch 0 measures copies: whether a later in-place op changes an output is only known afterwards.
            values = detached.clone() if self._batch == 0 else detached
            self._pending.append((record, detached, values, out._version, batch_dim, kind))
            self._pending_size += numel
            if self._pending_size >= PENDING_LIMIT:
                self._flush_outputs()
            return
        rows = _sample(detached, batch_dim)
        sumsq = _norm(detached).square()  # over the whole output: the rows may be a sample of it
        self._reduce([(record, rows, float(numel))], kind, sumsq.reshape(1), rows.shape)

    def _flush_outputs(self) -> None:
        """The forward statistics of the queued small outputs, a stacked computation per shape and kind."""
        if not self._pending:
            return
        pending, self._pending, self._pending_size = self._pending, [], 0
        groups: dict[tuple[Any, ...], list[tuple[int, torch.Tensor, float]]] = {}
        for record, out, values, version, batch_dim, kind in pending:
            if out._version != version:  # changed in place after the layer ran (an inplace ReLU after it)
                self._inplace.add(record)  # from the next batch on, reduced as it is produced
                if values is out:
                    continue  # not measurable any more (a layer whose forward changes from batch 0 on)
            key = (values.shape, batch_dim, values.dtype, values.get_device(), kind)
            groups.setdefault(key, []).append((record, values, float(values.numel())))
        for (shape, batch_dim, _, _, kind), group in groups.items():
            rows = (shape[0], -1) if batch_dim == 0 else (1, -1)
            step = max(1, STACKED // max(shape.numel(), 1))
            for start in range(0, len(group), step):
                self._reduce(group[start : start + step], kind, None, rows)

    def _reduce(
        self, group: list[tuple[int, torch.Tensor, float]], kind: str, sumsq: torch.Tensor | None, rows: Any
    ) -> None:
        """Sum of squares, between-sample spread, dead units and saturation of outputs of one shape (records,
        outputs, element counts), seen as ``rows`` (samples × values), computed together: one value per statistic
        and output, in one tensor."""
        records = tuple(record for record, _, _ in group)
        first = group[0][1]
        if first.dtype in (torch.float16, torch.bfloat16):  # the spread squares deviations: float16 overflows
            x = torch.stack([out for _, out, _ in group]).float()
        else:
            x = torch.stack([out for _, out, _ in group], out=self._scratch(0, (len(group), *first.shape), first))
        x = x.view(len(group), *rows)
        shape = tuple(x.shape)
        samples, values = x.shape[1], x.shape[2]
        stats: list[tuple[str, tuple[float, ...], torch.Tensor]] = []
        mean = x.mean(dim=1)
        if samples > 1:
            # Two passes (centre, then square): exact when outputs barely differ, which is what a collapse looks
            # like; and on CPU 20× faster than torch.var_mean/std along the samples.
            centred = torch.sub(x, mean.unsqueeze(1), out=self._scratch(1, shape, x))
            var = centred.square_().mean(dim=1)
            if sumsq is None:  # Σx² = samples · Σ(var + mean²), per output: no pass over x for it
                sumsq = (var + mean.square()).sum(dim=1).mul_(samples)
            stats.append(("act_std", (1.0,) * len(group), var.sqrt_().mean(dim=1)))
            if kind == "rect":
                # Rectified outputs are ≥ 0: a unit is positive for some sample iff its batch mean is > 0.
                stats.append(("alive", (float(values),) * len(group), (mean > 0).sum(dim=1)))
        elif sumsq is None:
            sumsq = mean.square().sum(dim=1)
        assert sumsq is not None
        stats.append(("act_sumsq", tuple(numel for _, _, numel in group), sumsq))
        if kind not in ("", "rect"):
            flat = self._saturated(kind, x, self._scratch(1, shape, x))
            stats.append(("saturated", (float(samples * values),) * len(group), flat))
        block = torch.stack([value.to(sumsq.dtype) for _, _, value in stats])
        for stat, numels, _ in stats:
            self._entries.append(_Entry(stat, records, numels, len(group)))
        self._add_values(block)

    def _scratch(self, slot: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A reusable buffer for the stacked reductions (``slot`` 0 or 1): a fresh megabyte per group costs page
        faults on CPU that take longer than the arithmetic. At most ``STACKED`` elements each, kept while recording."""
        key = (slot, like.dtype, like.device)
        numel = math.prod(shape)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = self._buffers[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buffer[:numel].view(shape)

    def _saturated(self, kind: str, y: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
        """Per output (the first dimension): how many values have a local derivative below
        ``saturation_derivative`` of the function's peak slope. Float ops in place: a comparison to a bool tensor
        and a sum of bools cost several times more on CPU."""
        d = self.saturation_derivative
        if kind == "Tanh":  # tanh' = 1 - y²
            flat = torch.abs(y, out=work).gt_(math.sqrt(1.0 - d))
        elif kind == "Sigmoid":  # σ' = y(1-y), peak 1/4
            flat = torch.sub(y, 0.5, out=work).abs_().gt_(0.5 * math.sqrt(1.0 - d))
        elif kind == "Softsign":  # softsign' = (1-|y|)²
            flat = torch.abs(y, out=work).gt_(1.0 - math.sqrt(d))
        elif kind.startswith("Hardtanh"):  # flat outside [min_val, max_val]
            low, high = (float(v) for v in kind.split(":")[1:])
            flat = ((y <= low) | (y >= high)).to(y.dtype)
        else:  # Hardsigmoid: flat at 0 and 1
            flat = ((y <= 0) | (y >= 1)).to(y.dtype)
        return flat.flatten(1).sum(dim=1)

    def _watch_signal(self, index: int, record: int, out: torch.Tensor) -> None:
        """Have the gradient reaching this output measured when backward computes it. The hook sits on the node
        that made the output (a pre-hook on its ``grad_fn``): cheaper than a tensor hook, and it sees the
        gradient of the output as the layer returned it even if a later in-place op changes the tensor."""
        layer = self.layers[record]
        if not layer.output_needs_grad:
            layer.output_needs_grad = True
            layer.signal_dtype = dtype_name(out.dtype)
        self._expects_signal.add(record)
        numel = float(out.numel())
        node = out.grad_fn
        if node is None:  # a leaf (a module returning a parameter): a tensor hook

            def on_tensor(grad: torch.Tensor) -> None:
                self._on_signal(index, record, numel, grad)

            out.register_hook(on_tensor)  # type: ignore[no-untyped-call]
            return
        slot = out.output_nr

        def on_node(grads: tuple[torch.Tensor | None, ...]) -> None:
            self._on_signal(index, record, numel, grads[slot])

        node.register_prehook(on_node)

    def _on_signal(self, index: int, record: int, numel: float, grad: torch.Tensor | None) -> None:
        if self._in_forward:  # backward has started: the forward pass is over
            self._in_forward = False
            self._flush_outputs()
            calls = self._calls
            self._call_inputs = {r: v for r, v in self._call_inputs.items() if len(calls[self._module[r]]) > 1}
        call_inputs = self._call_inputs.pop(record, None)
        if grad is None:
            return
        g = grad.detach()
        size = g.numel()
        if size <= SMALL:
            self._pending_grads.append((record, numel, g))
            self._pending_grads_size += size
            if self._pending_grads_size >= PENDING_LIMIT:
                self._flush_grads()
        else:
            self._append("signal_norm", record, _norm(g), numel)
        if record == self._profile_record:
            assert self.profile is not None
            self._append_many("positions", (record,), (1.0,), _per_position(g, self.profile.axis))
        if call_inputs is not None:  # a weighted module called several times: this call's own weight gradient
            call_input = first_float_tensor(call_inputs)
            if call_input is not None:
                self._append_call_grads(index, record, call_input.detach(), g)

    def _flush_grads(self) -> None:
        if not self._pending_grads:
            return
        pending, self._pending_grads, self._pending_grads_size = self._pending_grads, [], 0
        values = torch.stack(norms([g for _, _, g in pending]))
        self._append_many("signal_norm", tuple(r for r, _, _ in pending), tuple(n for _, n, _ in pending), values)

    def _append_call_grads(self, index: int, record: int, x: torch.Tensor, g: torch.Tensor) -> None:
        """The parameter gradient this one call contributes (the module runs several times): computed from its
        input and output gradient, as autograd does for the weight, and summed over calls by autograd."""
        module = self.taps[index].module
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or not weight.requires_grad:
            return
        with torch.no_grad():
            if isinstance(module, nn.Linear):
                dw = g.reshape(-1, g.shape[-1]).T.to(x.dtype) @ x.reshape(-1, x.shape[-1])
                channel = -1
            else:
                assert isinstance(module, nn.modules.conv._ConvNd)
                weight_grad = (conv_grad.conv1d_weight, conv_grad.conv2d_weight, conv_grad.conv3d_weight)
                dw = weight_grad[len(module.kernel_size) - 1](  # type: ignore[no-untyped-call]
                    x, weight.shape, g.to(x.dtype), module.stride, module.padding, module.dilation, module.groups
                )
                channel = 1
            self._append("call_grad_norm", record, _norm(dw), float(weight.numel()))  # one value per call
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor) and bias.requires_grad:
                db = g.movedim(channel, -1).reshape(-1, g.shape[channel]).sum(dim=0)
                self._append("call_grad_norm", record, _norm(db), float(bias.numel()))

    def _batch_dim(self, t: torch.Tensor) -> int | None:
        """The dimension that indexes samples: the first of the batch's size; None when the spread is undefined."""
        b = self._batch_size
        if b is None or b < 2 or t.dim() == 0:
            return None
        shape = t.shape
        if shape[0] == b:
            return 0
        if t.dim() > 1 and shape[1] == b:
            return 1
        return None

    # -- parameters --------------------------------------------------------------------------------------------
    def _compute_weight_rms(self) -> None:
        owners = [i for i, tap in enumerate(self.taps) if tap.params and not any(p.is_meta for p in tap.params)]
        if not owners:
            return
        device = self.taps[owners[0]].params[0].device
        with torch.no_grad():
            flat = [p.detach() for i in owners for p in self.taps[i].params]
            squares = torch.stack([n.to(device) for n in norms(flat)]).double().square()
            host = squares.cpu().tolist()  # once per scan: weights do not change while probing
        position = 0
        for i in owners:
            params = self.taps[i].params
            sq = sum(host[position : position + len(params)])
            position += len(params)
            count = sum(p.numel() for p in params)
            self.layers[i].weight_rms = math.sqrt(sq / count) if count else None  # Linear(32, 0) has no weights

    def _record_param_grads(self) -> None:
        grads: list[torch.Tensor] = []
        owners: list[int] = []
        self._grad_params = []
        for index, tap in self._trainable:
            layer = self.layers[index]
            present = [(p, p.grad) for p in tap.trainable if p.grad is not None]
            if len(present) < len(tap.trainable):
                layer.grad_missing += 1
            if not present:
                continue
            weight_grad = present[0][1]
            if layer.grad_dtype is None:
                layer.grad_dtype = dtype_name(weight_grad.dtype)
            if len(self._calls[index]) > 1 and _per_call(tap.module):
                continue  # measured per call (_append_call_grads): the total is the sum of the calls
            for p, g in present:
                grads.append(g.coalesce().values() if g.is_sparse else g)
                owners.append(index)
                self._grad_params.append(p)
            if isinstance(tap.module, EMBEDDINGS) and not weight_grad.is_sparse:
                # Rows of tokens absent from the batch get no gradient: count only touched rows, so a large
                # vocabulary does not read as "vanishing" (README, "Embeddings").
                touched = torch.count_nonzero(torch.linalg.vector_norm(weight_grad, dim=1))
                self._append("grad_rows", index, touched.float(), float(weight_grad.shape[1]))
        if grads:
            numels = tuple(float(g.numel()) for g in grads)
            self._append_many("grad_norm", tuple(owners), numels, torch.stack(norms(grads)))

    def _append(self, stat: str, layer: int, value: torch.Tensor, numel: float = 1.0) -> None:
        self._append_many(stat, (layer,), (numel,), value.reshape(1))

    def _append_many(self, stat: str, layers: tuple[int, ...], numels: tuple[float, ...], values: torch.Tensor) -> None:
        self._entries.append(_Entry(stat, layers, numels, values.numel()))
        self._add_values(values)

    def _add_values(self, values: torch.Tensor) -> None:
        if self._device is not None and values.device != self._device:
            values = values.to(self._device)
        elif self._device is None:
            self._device = values.device
        self._values.append(values)

    # -- host side ---------------------------------------------------------------------------------------------
    def _accumulate(self, host: list[float]) -> None:
        """Fold this batch's numbers into the records: per layer and statistic, the sum of the values (norms as
        squares), of their element counts, and how many there were."""
        n = len(self.layers)
        total = {stat: [0.0] * n for stat in _STATS}
        count = {stat: [0.0] * n for stat in _STATS}
        seen = {stat: [0] * n for stat in _STATS}
        position = 0
        for entry in self._entries:
            values = host[position : position + entry.size]
            position += entry.size
            if entry.stat == "loss":
                self.losses.append(values[0])
                continue
            if entry.stat == "positions":
                assert self.profile is not None
                self.profile.rms.append(values)
                continue
            if entry.stat == "grad_norm":
                largest = self.largest_grad_norm
                for param, value in zip(self._grad_params, values, strict=True):
                    largest[id(param)] = max(largest.get(id(param), 0.0), value)
            sums, counts, hits = total[entry.stat], count[entry.stat], seen[entry.stat]
            squared = entry.stat in _NORMS
            for owner, numel, value in zip(entry.layers, entry.numels, values, strict=True):
                sums[owner] += value * value if squared else value
                counts[owner] += numel
                hits[owner] += 1
        for index, layer in enumerate(self.layers):
            if seen["act_sumsq"][index]:
                layer.activation_rms.append(math.sqrt(total["act_sumsq"][index] / count["act_sumsq"][index]))
            if seen["act_std"][index]:
                layer.activation_std.append(total["act_std"][index] / seen["act_std"][index])
            if seen["saturated"][index]:
                layer.saturated_fraction.append(total["saturated"][index] / count["saturated"][index])
            if seen["alive"][index]:
                layer.dead_fraction.append(1.0 - total["alive"][index] / count["alive"][index])
            if seen["signal_norm"][index]:
                layer.signal_rms.append(math.sqrt(total["signal_norm"][index] / count["signal_norm"][index]))
            elif index in self._expects_signal:
                layer.signal_missing += 1
            stat = "grad_norm" if seen["grad_norm"][index] else "call_grad_norm"
            if seen[stat][index]:
                sumsq, numel = total[stat][index], count[stat][index]
                if seen["grad_rows"][index]:  # embedding: touched rows × embedding dim, plus any other own params
                    weight = self.taps[index].trainable[0]
                    numel = numel - weight.numel() + total["grad_rows"][index] * count["grad_rows"][index]
                layer.grad_rms.append(math.sqrt(sumsq / numel) if numel > 0 else 0.0)
                layer.grad_dtype = layer.grad_dtype or self.layers[self._module[index]].grad_dtype

    def ordered(self) -> Iterator[LayerRecord]:
        """Layers in forward execution order; layers that never ran follow their nearest ancestor that did. The
        first call of a module called several times is renamed ``name#1`` (the others are ``name#2``, …)."""
        for calls in self._calls:
            if len(calls) > 1:
                first = self.layers[calls[0]]
                if "#" not in first.name:
                    first.facts = replace(first.facts, name=f"{first.name}#1")
        ran = sorted((layer for layer in self.layers if layer.order >= 0), key=lambda layer: layer.order)
        idle = [layer for layer in self.layers if layer.order < 0]
        result = list(ran)
        for layer in idle:
            position = len(result)
            parts = layer.name.split(".")
            for cut in range(len(parts) - 1, -1, -1):
                ancestor = ".".join(parts[:cut])
                hits = [
                    i
                    for i, other in enumerate(result)
                    if other.name == ancestor or other.name.startswith(ancestor + ".") and ancestor
                ]
                if hits:
                    position = hits[-1] + 1
                    break
            result.insert(position, layer)
        return iter(result)


MIN_POSITIONS = 4  # fewer positions than this are no sequence worth a profile


def _profile_axis(layer: LayerRecord, out: torch.Tensor, batch_size: int | None) -> PositionProfile | None:
    """The sequence axis of this layer's output, if it is the first layer of a sequence model: (B, T, F) or
    (T, B, F) for embeddings, recurrent, attention and linear layers, (B, C, L) for a 1-D convolution."""
    if batch_size is None or out.dim() != 3:
        return None
    facts = layer.facts
    if facts.conv_dims == 1:
        axis = 2
    elif facts.kind is LayerKind.CONV or facts.is_activation:
        return None
    else:
        batch_dims = [d for d in (0, 1) if out.shape[d] == batch_size]
        if not batch_dims:
            return None
        axis = 1 - batch_dims[0]
    if out.shape[axis] < MIN_POSITIONS:
        return None
    return PositionProfile(layer.name, axis, int(out.shape[axis]))


def _per_position(grad: torch.Tensor, axis: int) -> torch.Tensor:
    """RMS of the gradient at each position along ``axis`` (over the batch and the features)."""
    moved = grad.movedim(axis, 0)
    rms: torch.Tensor = torch.linalg.vector_norm(moved.reshape(moved.shape[0], -1).float(), dim=1)
    return rms / math.sqrt(max(moved[0].numel(), 1))


def _saturation_kind(module: nn.Module) -> str:
    """How the forward statistics treat this module's output: "rect" (dead units), a saturating function's name
    (saturation; Hardtanh with its bounds), or "" (spread only)."""
    if isinstance(module, RECTIFYING):
        return "rect"
    if isinstance(module, nn.Hardtanh):
        return f"Hardtanh:{module.min_val}:{module.max_val}"
    for cls in SATURATING:
        if isinstance(module, cls):
            return cls.__name__
    return ""


def _acc(t: torch.Tensor) -> torch.dtype:
    """The dtype a reduction of ``t`` accumulates in: float64 stays float64, everything else float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _norm(t: torch.Tensor) -> torch.Tensor:
    """‖x‖₂ in float32 without materialising x² (a norm kernel): no overflow for half types, no extra memory.
    Squared on the host, where it costs nothing."""
    # float64 stays float64: torch refuses to reduce it into float32 (no narrowing), which crashed any double model.
    norm: torch.Tensor = torch.linalg.vector_norm(t, dtype=_acc(t))
    return norm


def norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Float32 norms of many tensors in one fused call where torch offers it."""
    if not tensors:
        return []
    try:
        return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))
    except (TypeError, RuntimeError, NotImplementedError):  # older torch, several devices, sparse tensors
        pass
    values = [_norm(t) for t in tensors]
    dtype = torch.float64 if any(v.dtype == torch.float64 for v in values) else torch.float32
    return [v.to(values[0].device, dtype) for v in values]


def _sample(t: torch.Tensor, batch_dim: int | None) -> torch.Tensor:
    """The output as (samples, positions), reading at most ``FORWARD_SAMPLE`` elements: a fixed stride over the
    positions, so the forward statistics (spread, saturation, dead units) cost the same for any layer size."""
    rows = t.movedim(batch_dim, 0).reshape(t.shape[batch_dim], -1) if batch_dim is not None else t.reshape(1, -1)
    step = -(-rows.numel() // FORWARD_SAMPLE)
    return rows[:, ::step] if step > 1 else rows
