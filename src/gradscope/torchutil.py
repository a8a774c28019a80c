"""Torch helpers shared by the scan, the remedies, the trial and the watch: walking tensors in nested outputs, a
model's device and dtype, the seeded RNG scope, and what kind of layer a module is (its ``LayerFacts``)."""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from .errors import ProbeError
from .records import LayerFacts, LayerKind
from .util import describe

# -- tensors ---------------------------------------------------------------------------------------------------


def iter_tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a batch or an output (tensors, tuples, lists, dicts), depth first, in order."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from iter_tensors(value)
    elif isinstance(obj, (tuple, list)):
        for value in obj:
            yield from iter_tensors(value)


def first_float_tensor(obj: Any) -> torch.Tensor | None:
    """The first floating-point tensor in ``obj`` (a module's output): what the hooks measure."""
    return next((t for t in iter_tensors(obj) if t.is_floating_point()), None)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# -- models ----------------------------------------------------------------------------------------------------


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter (float32 for a model without one)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (remedies and trials work on copies).

    ``copy.deepcopy`` refuses some models: a tensor attribute computed from the parameters (the ``weight`` of a
    layer pruned with ``torch.nn.utils.prune`` or wrapped by the old ``weight_norm``: not a graph leaf), or an
    attribute that cannot be copied (a ``threading.Lock``). Then such attributes get their own treatment: a
    computed tensor is copied detached (its hook computes it again on the copy's next forward), an object that
    cannot be copied is shared with the original. Raises ``ProbeError`` with the reason when even that fails."""
    try:
        return copy.deepcopy(model)
    except Exception:
        pass
    memo: dict[int, Any] = {}
    for module in model.modules():
        for key, value in vars(module).items():
            if key in ("_parameters", "_buffers", "_modules"):
                continue
            if isinstance(value, torch.Tensor):
                if not value.is_leaf:
                    memo[id(value)] = value.detach().clone()
                continue
            try:
                copy.deepcopy(value)
            except Exception:
                memo[id(value)] = value
    try:
        return copy.deepcopy(model, memo)
    except Exception as exc:
        raise ProbeError(f"the model cannot be copied in memory ({describe(exc)})") from exc


def set_training(model: nn.Module, mode: bool) -> nn.Module:
    """``model.train(mode)``. Where some module's own ``train`` is not ``train(mode)`` (a method that trains it, as
    in the forward-forward example, on which ``model.train()`` fails in torch too), every flag is set directly, as
    ``nn.Module.train`` does, and then each module whose own ``train(mode)`` override can run (it and everything below
    it take ``mode``) is called, outermost first: a backbone that keeps its BatchNorm in eval still does."""
    modules = list(model.modules())
    if all(_takes_mode(m) for m in modules):
        return model.train(mode)
    for m in modules:
        m.training = mode
    for m in modules:
        if type(m).train is not nn.Module.train and all(_takes_mode(inner) for inner in m.modules()):
            m.train(mode)
    return model


def _takes_mode(module: nn.Module) -> bool:
    """Whether ``module.train(mode=...)`` is torch's, or an override that takes ``mode`` as torch's does."""
    if type(module).train is nn.Module.train and "train" not in vars(module):
        return True
    try:
        inspect.signature(module.train).bind(mode=True)
    except (TypeError, ValueError):  # other parameters, or not a function at all
        return False
    return True


# -- randomness ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed torch (CPU and ``device``'s CUDA generator), Python's ``random`` and NumPy's global RNG for the block,
    and put the caller's states back afterwards, also on error: whatever the model draws is reproducible, and
    the user's training code draws next exactly what it would have drawn without us."""
    devices = [device] if device is not None and device.type == "cuda" else []
    py_state = random.getstate()
    np_random = _numpy_random()
    np_state = np_random.get_state() if np_random is not None else None
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        random.seed(seed)
        if np_random is not None:
            np_random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            if np_random is not None:
                np_random.set_state(np_state)


@contextlib.contextmanager
def threads(count: int, device: torch.device) -> Iterator[None]:
    """CPU kernels sum in an order that depends on the thread count: the scan runs on ``count`` threads
    (``probe.threads``; 0 leaves torch's setting) so its numbers are the same whatever the machine's count."""
    if count <= 0 or device.type != "cpu":
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _numpy_random() -> Any:
    try:
        import numpy
    except ImportError:  # numpy is optional: nothing to seed
        return None
    return numpy.random


# -- what kind of layer a module is ---------------------------------------------------------------------------

SATURATING: tuple[type[nn.Module], ...] = (nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Softsign, nn.Hardsigmoid)
# nn.ReLU6 derives from nn.Hardtanh but is a rectifier: half its outputs sit at 0 after a norm layer, as a ReLU's do.
RECTIFYING: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    *SATURATING,
    *RECTIFYING,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Softplus,
    nn.Hardswish,
    nn.LogSigmoid,
    nn.Tanhshrink,
)
WEIGHTED: tuple[type[nn.Module], ...] = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
EMBEDDINGS: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)
NORMS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
# Normalization layers of other code, by how their class name ends: LLaMA's RMSNorm, T5LayerNorm, apex's
# FusedLayerNorm (leaves only; not a fused LayerNormLinear, which is a weighted layer).
_NORM_NAME = re.compile(r"(Layer|RMS|Group|Batch|Instance)Norm(\d[dD])?$")


def _named_norm(module: nn.Module) -> bool:
    return bool(_NORM_NAME.search(type(module).__name__)) and next(module.children(), None) is None


# Activations nn.init.calculate_gain knows, by the torch.nn class name.
_GAIN_NAMES = {"Tanh": "tanh", "Sigmoid": "sigmoid", "ReLU": "relu", "LeakyReLU": "leaky_relu", "SELU": "selu"}


def layer_facts(
    name: str, module: nn.Module, *, parameters: int, trainable: bool, shares_parameters_with: str | None
) -> LayerFacts:
    """The facts of ``module`` that the rules and the advice read (README, "What counts as a layer")."""
    kind, fan_in, out_features, conv_dims, cell = LayerKind.OTHER, None, None, None, None
    if isinstance(module, nn.Linear):
        kind, fan_in, out_features = LayerKind.LINEAR, module.in_features, module.out_features
    elif isinstance(module, nn.Bilinear):
        kind, fan_in, out_features = LayerKind.LINEAR, module.in1_features + module.in2_features, module.out_features
    elif isinstance(module, nn.modules.conv._ConvNd):
        kind, out_features = LayerKind.CONV, module.out_channels
        fan_in = module.in_channels // module.groups * math.prod(module.kernel_size)
        conv_dims = len(module.kernel_size)
    elif isinstance(module, EMBEDDINGS):
        kind = LayerKind.EMBEDDING
    elif isinstance(module, NORMS) or _named_norm(module):
        kind = LayerKind.NORM
    elif isinstance(module, nn.RNNBase):
        kind, cell = LayerKind.RECURRENT, {"RNN_TANH": "RNN", "RNN_RELU": "RNN"}.get(module.mode, module.mode)
    elif isinstance(module, nn.MultiheadAttention):
        kind = LayerKind.ATTENTION
    activation = activation_name(module) if kind is LayerKind.OTHER else None
    if activation is not None:
        kind = LayerKind.ACTIVATION
    return LayerFacts(
        name=name,
        type=type(module).__name__,
        kind=kind,
        parameters=parameters,
        trainable=trainable,
        shares_parameters_with=shares_parameters_with,
        fan_in=fan_in,
        out_features=out_features,
        conv_dims=conv_dims,
        activation=activation,
        saturating=activation in ("Tanh", "Sigmoid", "Hardtanh", "Softsign", "Hardsigmoid"),
        rectifying=activation in ("ReLU", "ReLU6"),
        gain=_gain(activation, module),
        cell=cell,
        container=next(module.children(), None) is not None,
    )


# Activation modules of other libraries (Hugging Face's GELUActivation, NewGELUActivation, SiLUActivation, timm's
# Swish), recognised by their class name: parameter-free leaves whose name contains the function's.
_NAMED_ACTIVATIONS = (("GELU", "GELU"), ("SiLU", "SiLU"), ("Swish", "SiLU"), ("Mish", "Mish"), ("ReLU", "ReLU"),
                      ("Tanh", "Tanh"), ("Sigmoid", "Sigmoid"))  # fmt: skip


def activation_name(module: nn.Module) -> str | None:
    """The activation ``module`` computes: its torch.nn class (a subclass of nn.Tanh is Tanh), or for another
    library's parameter-free activation module the function its class is named after; None for anything else."""
    known = _torch_class(module, ACTIVATIONS)
    if known is not None:
        return known
    if next(module.parameters(recurse=False), None) is not None or next(module.children(), None) is not None:
        return None
    name = type(module).__name__
    return next((act for part, act in _NAMED_ACTIVATIONS if part.lower() in name.lower()), None)


def _torch_class(module: nn.Module, bases: tuple[type[nn.Module], ...]) -> str | None:
    """The nearest torch.nn class among ``bases`` in the module's MRO (a user's ``class MyTanh(nn.Tanh)`` is Tanh)."""
    for cls in type(module).__mro__:
        if cls in bases:
            return cls.__name__
    return None


def _gain(activation: str | None, module: nn.Module) -> float | None:
    name = _GAIN_NAMES.get(activation or "")
    if name is None:
        return None
    param = getattr(module, "negative_slope", None) if name == "leaky_relu" else None
    return float(nn.init.calculate_gain(name, param))  # type: ignore[arg-type]


# -- the graph ------------------------------------------------------------------------------------------------

_WEIGHT_OPS = ("Mm", "Addmm", "Bmm", "Convolution", "Linear", "Embedding", "Mv")


# Autograd nodes that only move, reshape or cast values, and those that add or join them (by class name, digits cut).
_MOVES = frozenset(
    f"{name}Backward"
    for name in ("Expand", "View", "UnsafeView", "Reshape", "Unsqueeze", "Squeeze", "Slice", "Select", "Transpose",
                 "Permute", "T", "Clone", "Repeat", "AsStrided", "Alias", "ToCopy", "Contiguous")
)  # fmt: skip
_JOINS = frozenset({"AddBackward", "SubBackward", "CatBackward", "StackBackward"})


class AutogradGraph:
    """The autograd graph behind ``outputs``, walked once before backward: every node in post-order (a node after
    the nodes it reads) and, for each, the nodes that read it. A graph of more than ``max_nodes`` nodes is given up
    on: it has no skip connection and no additive parameter."""

    def __init__(self, outputs: Iterable[torch.Tensor], max_nodes: int = 50_000) -> None:
        self.order: dict[Any, int] = {}
        self.users: dict[Any, list[Any]] = {}
        stack: list[tuple[Any, bool]] = [(t.grad_fn, False) for t in outputs if t.grad_fn is not None]
        seen: set[Any] = set()
        while stack:
            node, done = stack.pop()
            if done:
                self.order[node] = len(self.order)
                continue
            if node in seen:
                continue
            seen.add(node)
            if len(seen) > max_nodes:
                self.order, self.users = {}, {}
                return
            stack.append((node, True))
            for child, _ in node.next_functions:
                if child is not None:
                    self.users.setdefault(child, []).append(node)
                    if child not in seen:
                        stack.append((child, False))

    def has_skip_connection(self) -> bool:
        """Whether the graph adds a tensor to a transform of itself that passes through a weighted op (``x + f(x)``:
        a residual connection)."""
        for node in self.order:
            if _op(node) != "AddBackward":
                continue
            inputs = [child for child, _ in node.next_functions if child is not None]
            if len(inputs) == 2 and (
                _reaches(inputs[0], inputs[1], self.order) or _reaches(inputs[1], inputs[0], self.order)
            ):
                return True
        return False

    def additive_parameters(self) -> set[int]:
        """ids of the parameters whose every use, past ops that only move or reshape values, adds or concatenates
        them to data computed from the input (a position table, a class token, a bias; not a weight built as ``base
        + delta``). At zero such a parameter holds nothing shut, so it is no gate; and its gradient is the output
        gradient summed over the samples (and positions), whose size says nothing of how the gradient fares on its
        way back."""
        found: set[int] = set()
        for node, direct in self.users.items():
            variable = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf's (parameter's) gradient
            if not isinstance(variable, torch.Tensor):
                continue
            uses, pending, visited = [], list(direct), set()
            while pending:
                user = pending.pop()
                if user in visited:
                    continue
                visited.add(user)
                if _op(user) in _MOVES:
                    pending.extend(self.users.get(user, []))
                else:
                    uses.append(_op(user) in _JOINS and not _parameters_only(user))
            if uses and all(uses):
                found.add(id(variable))
        return found


def _op(node: Any) -> str:
    """An autograd node's kind: its class name without the version digits (``AddBackward0`` → ``AddBackward``)."""
    return type(node).__name__.rstrip("0123456789")


def _parameters_only(node: Any) -> bool:
    """Whether every input of ``node``, past moves, is a parameter or a constant: a weight built as ``base + delta``
    or ``cat([w1, w2])`` joins parameters with each other, not with the data flowing through the model."""
    pending, seen = [node], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for child, _ in current.next_functions:
            if child is None or isinstance(getattr(child, "variable", None), torch.Tensor):
                continue  # a constant, or a parameter (a leaf's AccumulateGrad)
            if _op(child) not in _MOVES:
                return False  # data: an activation computed from the input
            pending.append(child)
    return True


def _reaches(start: Any, target: Any, order: dict[Any, int]) -> bool:
    """A path from ``start`` down to ``target`` through at least one weighted op (only nodes between the two in
    post-order can lie on it)."""
    low = order.get(target, -1)
    stack = [(start, False)]
    visited: set[tuple[Any, bool]] = set()
    while stack:
        node, weighted = stack.pop()
        if node is target:
            if weighted:
                return True
            continue
        if (node, weighted) in visited or order.get(node, -1) < low:
            continue
        visited.add((node, weighted))
        weighted = weighted or type(node).__name__.startswith(_WEIGHT_OPS)
        stack.extend((child, weighted) for child, _ in node.next_functions if child is not None)
    return False
