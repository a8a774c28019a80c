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
from .torchutil import ACTIVATIONS, EMBEDDINGS, RECTIFYING, SATURATING, dtype_name, first_float_tensor, layer_facts


def _per_call(module: nn.Module) -> bool:
    """Whether the parameter gradient of each call is computed when the module runs several times in one forward
    pass (Linear and convolutions; a transposed convolution, a norm or a recurrent layer keeps its total)."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.modules.conv._ConvNd) and not module.transposed)


# The spread, saturation and dead-unit statistics read at most this many elements of a layer's output per batch
# (a fixed stride; README "Overhead"). Sums of squares and gradients always read everything.
FORWARD_SAMPLE = 16_384


@dataclass(frozen=True)
class Tap:
    """The torch side of a layer: the module the hooks sit on and the parameters counted for it."""

    module: nn.Module
    params: tuple[nn.Parameter, ...]  # own parameters counted here (tied ones only at their first owner)
    trainable: tuple[nn.Parameter, ...]


# One entry of the flat per-batch list: which record, which statistic, how many values it holds (a position
# profile holds one per position), and the host-side number needed to turn the device value into the statistic
# (element counts are known from shapes without a sync).
@dataclass(frozen=True)
class _Entry:
    layer: int
    stat: str
    numel: float = 1.0
    size: int = 1


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
        self._calls: list[list[int]] = [[i] for i in range(len(self.layers))]  # module → its call records
        self._module: list[int] = list(range(len(self.layers)))  # record → the module it measures
        self._call_index = [0] * len(self.layers)  # calls seen so far in this batch, per module
        self._handles: list[Any] = []
        self._values: list[torch.Tensor] = []
        self._entries: list[_Entry] = []
        self._expects_signal: set[int] = set()  # records whose output needed a gradient in this batch
        self._batch = -1
        self._order = 0
        self._batch_size: int | None = None
        self._device: torch.device | None = None
        self.batches_recorded = 0
        self.losses: list[float] = []

    # -- discovery ---------------------------------------------------------------------------------------------
    @staticmethod
    def _discover(model: nn.Module) -> tuple[list[Tap], list[LayerRecord]]:
        owner: dict[int, str] = {}
        taps: list[Tap] = []
        layers: list[LayerRecord] = []
        for name, module in model.named_modules():
            if ".parametrizations" in f".{name}":
                continue  # counted with the module they parametrize (below)
            direct = list(module.parameters(recurse=False))
            if parametrize.is_parametrized(module):
                # weight_norm, spectral_norm, gradscope's Rescale: the trainable tensor is the parametrization's
                # ``original``; it belongs to this module, whose name stays the one the user knows.
                direct += list(module.parametrizations.parameters())
            own = [p for p in direct if id(p) not in owner]
            shared = [owner[id(p)] for p in direct if id(p) in owner]
            for p in own:
                owner[id(p)] = name
            if direct or isinstance(module, ACTIVATIONS):
                trainable = tuple(p for p in own if p.requires_grad)
                taps.append(Tap(module, tuple(own), trainable))
                facts = layer_facts(
                    name,
                    module,
                    parameters=sum(p.numel() for p in own),
                    trainable=bool(trainable),
                    shares_parameters_with=shared[0] if shared and not own else None,
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
        self._values.clear()
        self._entries.clear()

    # -- per batch ---------------------------------------------------------------------------------------------
    def start_batch(self, batch_size: int | None) -> None:
        self._batch += 1
        self._batch_size = batch_size
        self._expects_signal.clear()
        self._values.clear()
        self._entries.clear()
        self._call_index = [0] * len(self.taps)

    def add_loss(self, loss: torch.Tensor) -> None:
        self._append(-1, "loss", loss.detach().float())

    def end_batch(self) -> None:
        """Reduce parameter gradients, then read every statistic of this batch from the device in one copy."""
        self._record_param_grads()
        host: list[float] = []
        if self._values:
            # the one host sync of the batch
            host = torch.cat([v.reshape(-1).to(self._values[0].dtype) for v in self._values]).cpu().tolist()
        self._accumulate(host)
        self._values.clear()
        self._entries.clear()
        self.batches_recorded += 1

    # -- hooks -------------------------------------------------------------------------------------------------
    def _record_for_call(self, index: int) -> int:
        """The record of this call of module ``index``: the module's own for its first call, a new one (batch 0)
        or the one made then (later batches) for the next calls."""
        call = self._call_index[index]
        self._call_index[index] = call + 1
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
        saturating = isinstance(module, SATURATING) and not isinstance(module, RECTIFYING)
        rectifying = isinstance(module, RECTIFYING)
        weighted = _per_call(module) and bool(self.taps[index].trainable)

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            record = self._record_for_call(index)
            if record < 0:
                return
            layer = self.layers[record]
            out = first_float_tensor(output)
            if self._batch == 0 and layer.order < 0:
                layer.order = self._order
                self._order += 1
                layer.output_shape = tuple(out.shape) if out is not None else None
            if out is None or out.numel() == 0:  # no output to measure (a zero-width Linear(32, 0))
                return
            if self._device is None:
                self._device = out.device
            detached = out.detach()
            numel = float(detached.numel())
            self._append(record, "act_norm", _norm(detached), numel)
            batch_dim = self._batch_dim(detached)
            rows = _sample(detached, batch_dim)
            if rows.dtype in (torch.float16, torch.bfloat16):
                rows = rows.float()  # the spread squares deviations: float16 overflows above 256
            if batch_dim is not None:
                # Two passes (centre, then square): exact when outputs barely differ, which is what a collapse
                # looks like; also far faster on CPU than torch.std along dim 0.
                mean = rows.mean(dim=0, keepdim=True)
                centred = rows - mean
                self._append(record, "act_std", centred.square_().mean(dim=0).sqrt_().mean().float())
                if rectifying:
                    # Rectified outputs are ≥ 0: a unit is positive for some sample iff its batch mean is > 0.
                    alive = torch.count_nonzero(mean > 0)
                    self._append(record, "alive", alive.float(), float(rows.shape[1]))
            if saturating:
                self._append(record, "saturated", self._saturated_count(module, rows), float(rows.numel()))
            if self.positions and self._batch == 0 and layer.order == 0:  # the first layer to run
                self.profile = _profile_axis(layer, detached, self._batch_size)
            if out.requires_grad:
                layer.output_needs_grad = True
                layer.signal_dtype = dtype_name(out.dtype)
                self._expects_signal.add(record)
                first_input = first_float_tensor(inputs) if weighted else None
                out.register_hook(  # type: ignore[no-untyped-call]
                    self._signal_hook(index, record, numel, first_input)
                )

        return hook

    def _signal_hook(
        self, index: int, record: int, numel: float, call_input: torch.Tensor | None
    ) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            g = grad.detach()
            self._append(record, "signal_norm", _norm(g), numel)
            profile = self.profile
            if profile is not None and profile.layer == self.layers[record].name:
                self._append(record, "positions", _per_position(g, profile.axis), size=profile.length)
            if call_input is not None and len(self._calls[index]) > 1:
                self._append_call_grads(index, record, call_input.detach(), g)

        return hook

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
            self._append(record, "call_grad_norm", _norm(dw), float(weight.numel()))
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor) and bias.requires_grad:
                db = g.movedim(channel, -1).reshape(-1, g.shape[channel]).sum(dim=0)
                self._append(record, "call_grad_norm", _norm(db), float(bias.numel()))

    def _saturated_count(self, module: nn.Module, y: torch.Tensor) -> torch.Tensor:
        """Count outputs whose local derivative is below ``saturation_derivative`` of the function's peak slope."""
        d = self.saturation_derivative
        if isinstance(module, nn.Tanh):  # tanh' = 1 - y²
            mask = y.abs() > math.sqrt(1.0 - d)
        elif isinstance(module, nn.Sigmoid):  # σ' = y(1-y), peak 1/4
            mask = (y - 0.5).abs() > 0.5 * math.sqrt(1.0 - d)
        elif isinstance(module, nn.Softsign):  # softsign' = (1-|y|)²
            mask = y.abs() > 1.0 - math.sqrt(d)
        elif isinstance(module, nn.Hardtanh):  # flat outside [min_val, max_val]
            mask = (y <= module.min_val) | (y >= module.max_val)
        else:  # Hardsigmoid: flat at 0 and 1
            mask = (y <= 0) | (y >= 1)
        return torch.count_nonzero(mask).float()

    def _batch_dim(self, t: torch.Tensor) -> int | None:
        """The dimension that indexes samples: the first of the batch's size; None when the spread is undefined."""
        b = self._batch_size
        if b is None or b < 2 or t.dim() == 0:
            return None
        for dim, size in enumerate(t.shape[:2]):
            if size == b:
                return dim
        return None

    # -- parameters --------------------------------------------------------------------------------------------
    def _compute_weight_rms(self) -> None:
        owners = [i for i, tap in enumerate(self.taps) if tap.params and not any(p.is_meta for p in tap.params)]
        if not owners:
            return
        device = self.taps[owners[0]].params[0].device
        with torch.no_grad():
            values = [torch.stack([_sumsq(p.detach()).to(device) for p in self.taps[i].params]).sum() for i in owners]
            host = torch.stack(values).cpu().tolist()  # once per scan: weights do not change while probing
        for i, sq in zip(owners, host, strict=True):
            count = sum(p.numel() for p in self.taps[i].params)
            self.layers[i].weight_rms = math.sqrt(sq / count) if count else None  # Linear(32, 0) has no weights

    def _record_param_grads(self) -> None:
        grads: list[torch.Tensor] = []
        owners: list[int] = []
        for index, tap in enumerate(self.taps):
            layer = self.layers[index]
            if not tap.trainable:
                continue
            present = [p.grad for p in tap.trainable if p.grad is not None]
            if len(present) < len(tap.trainable):
                layer.grad_missing += 1
            if not present:
                continue
            layer.grad_dtype = dtype_name(present[0].dtype)
            if len(self._calls[index]) > 1 and _per_call(tap.module):
                continue  # measured per call (_append_call_grads): the total is the sum of the calls
            for g in present:
                grads.append(g.coalesce().values() if g.is_sparse else g)
                owners.append(index)
            if isinstance(tap.module, EMBEDDINGS) and not present[0].is_sparse:
                # Rows of tokens absent from the batch get no gradient: count only touched rows, so a large
                # vocabulary does not read as "vanishing" (README, "Embeddings").
                weight_grad = present[0]
                touched = torch.count_nonzero(torch.linalg.vector_norm(weight_grad, dim=1))
                self._append(index, "grad_rows", touched.float(), float(weight_grad.shape[1]))
        for index, g, norm in zip(owners, grads, norms(grads), strict=True):
            self._append(index, "grad_norm", norm, float(g.numel()))

    def _append(self, layer: int, stat: str, value: torch.Tensor, numel: float = 1.0, size: int = 1) -> None:
        if self._device is not None and value.device != self._device:
            value = value.to(self._device)
        elif self._device is None:
            self._device = value.device
        self._entries.append(_Entry(layer, stat, numel, size))
        self._values.append(value.float() if value.dtype != torch.float64 else value)

    # -- host side ---------------------------------------------------------------------------------------------
    def _accumulate(self, host: list[float]) -> None:
        sums: dict[tuple[int, str], list[float]] = {}
        position = 0
        for entry in self._entries:
            values = host[position : position + entry.size]
            position += entry.size
            if entry.stat == "positions":
                assert self.profile is not None
                self.profile.rms.append(values)
                continue
            value = values[0]
            acc = sums.setdefault((entry.layer, entry.stat), [0.0, 0.0, 0.0])
            acc[0] += value * value if entry.stat.endswith("_norm") else value  # norms are summed as squares
            acc[1] += entry.numel
            acc[2] += 1
        if (-1, "loss") in sums:
            self.losses.append(sums[(-1, "loss")][0])
        for index, layer in enumerate(self.layers):
            act = sums.get((index, "act_norm"))
            if act is not None:
                layer.activation_rms.append(math.sqrt(act[0] / act[1]))
            std = sums.get((index, "act_std"))
            if std is not None:
                layer.activation_std.append(std[0] / std[2])
            sat = sums.get((index, "saturated"))
            if sat is not None:
                layer.saturated_fraction.append(sat[0] / sat[1])
            alive = sums.get((index, "alive"))
            if alive is not None:
                layer.dead_fraction.append(1.0 - alive[0] / alive[1])
            signal = sums.get((index, "signal_norm"))
            if signal is not None:
                layer.signal_rms.append(math.sqrt(signal[0] / signal[1]))
            elif index in self._expects_signal:
                layer.signal_missing += 1
            grad = sums.get((index, "grad_norm")) or sums.get((index, "call_grad_norm"))
            if grad is not None:
                count = grad[1]
                rows = sums.get((index, "grad_rows"))
                if rows is not None:  # embedding: touched rows × embedding dim, plus any other own params
                    weight = self.taps[index].trainable[0]
                    count = count - weight.numel() + rows[0] * rows[1]
                layer.grad_rms.append(math.sqrt(grad[0] / count) if count > 0 else 0.0)
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


def _sumsq(t: torch.Tensor) -> torch.Tensor:
    return _norm(t).square()


def _norm(t: torch.Tensor) -> torch.Tensor:
    """‖x‖₂ in float32 without materialising x² (a norm kernel): no overflow for half types, no extra memory.
    Squared on the host, where it costs nothing."""
    # float64 stays float64: torch refuses to reduce it into float32 (no narrowing), which crashed any double model.
    norm: torch.Tensor = torch.linalg.vector_norm(t, dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)
    return norm


def norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Float32 norms of many tensors in one fused call where torch offers it."""
    if not tensors:
        return []
    if len({t.device for t in tensors}) == 1 and all(t.layout is torch.strided for t in tensors):
        try:
            return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))
        except (TypeError, RuntimeError):  # older torch without the dtype argument
            pass
    return [_norm(t) for t in tensors]


def _sample(t: torch.Tensor, batch_dim: int | None) -> torch.Tensor:
    """The output as (samples, positions), reading at most ``FORWARD_SAMPLE`` elements: a fixed stride over the
    positions, so the forward statistics (spread, saturation, dead units) cost the same for any layer size."""
    rows = t.movedim(batch_dim, 0).reshape(t.shape[batch_dim], -1) if batch_dim is not None else t.reshape(1, -1)
    step = -(-rows.numel() // FORWARD_SAMPLE)
    return rows[:, ::step] if step > 1 else rows
