"""Apply suggestions to a copy of a model, in memory. The user's model and file are never touched.

Every insertion ("after module X") is a forward hook on X that passes X's output through the new module, so the
patched model keeps every layer name of the original (before/after reports pair layers by name) and works for any
module tree, ``nn.Sequential`` or not. Modules a remedy adds (norm layers) live in ``Patched.added`` so that a
training trial optimises them too. Remedies that only act during training (a weight penalty, gradient clipping)
are carried as training settings. Skip connections around equal-shape runs of an ``nn.Sequential`` are hooks too
(the block's input is kept by a pre-hook on its first module and added to its last module's output); an ``nn.RNN``
is swapped for an ``nn.GRU`` with the same interface. What needs a code change (attention over a sequence, skips
across shape changes) is reported as skipped, with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ProbeError
from ..results import Suggestion
from ..torchutil import WEIGHTED, copy_model, seeded
from ..vocab import Remedy
from .pseudonorm import PseudoNorm
from .rescale import apply_rescale, weight_penalty

_ACTIVATIONS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "ReLU": lambda _: nn.ReLU(),
    "LeakyReLU": lambda params: nn.LeakyReLU(float(params.get("negative_slope", 0.01))),
    "ELU": lambda _: nn.ELU(),
    "GELU": lambda _: nn.GELU(),
    "Tanh": lambda _: nn.Tanh(),
}


class Patched(nn.Module):
    """The patched copy (``model``, with the original layer names) and the modules remedies added."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.added = nn.ModuleDict()
        self.applied: list[Suggestion] = []
        self.skipped: list[tuple[Suggestion, str]] = []
        self.penalties: list[tuple[list[nn.Module], float]] = []  # (modules, λ) of weight penalties
        self.clip_norm: float | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def penalty(self) -> torch.Tensor | None:
        """The training-time penalty the applied remedies ask for (λ·Σ‖W‖²), or None."""
        terms = [weight_penalty(modules, lam) for modules, lam in self.penalties]
        return sum(terms[1:], terms[0]) if terms else None


@dataclass(frozen=True)
class Options:
    """How remedies are built when applied. ``pseudo_norm_kwargs`` override a suggestion's own (its ``scale`` was
    measured for the probe's loss and batch size; a training trial measures it again for its own)."""

    pseudo_norm_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


def apply(model: nn.Module, suggestions: Iterable[Suggestion], options: Options | None = None) -> Patched:
    """A deep copy of ``model`` with each suggestion applied in order; raises ProbeError if a named layer is gone."""
    options = options or Options()
    patched = Patched(copy_model(model))
    with seeded(options.seed):  # re-initialisation draws from the global RNG; keep the caller's state
        for suggestion in suggestions:
            reason = _apply_one(patched, suggestion, options)
            if reason is None:
                patched.applied.append(suggestion)
            else:
                patched.skipped.append((suggestion, reason))
    return patched


def pick(suggestions: Sequence[Suggestion]) -> list[Suggestion]:
    """The suggestions ``scan --fix`` applies: for each finding, the first suggestion that motivates it and can be
    applied in memory — the one the advice puts first — and no second remedy for an already treated finding."""
    chosen: list[Suggestion] = []
    treated: set[str] = set()
    for s in suggestions:
        if s.in_memory and s.remedy is not Remedy.CLIP and not (set(s.rules) & treated):
            chosen.append(s)
            treated.update(s.rules)
    return chosen


def _module(root: nn.Module, name: str) -> nn.Module:
    try:
        return root.get_submodule(name) if name else root
    except AttributeError:
        raise ProbeError(
            f"the suggestion names layer '{name}', which this model does not have; rescan the model "
            "and apply the new suggestions"
        ) from None


def module_name(layer: str) -> str:
    """The module behind a layer name: a module called several times (shared weights, one block in a loop) is
    scanned as one layer per call, ``'block.1#3'`` for its third call; every call is the module ``'block.1'``."""
    return layer.partition("#")[0]


def _apply_one(patched: Patched, s: Suggestion, options: Options) -> str | None:
    root = patched.model
    # A hook or a replacement acts on the module, so on every call of a shared one: each module once.
    layers = tuple(dict.fromkeys(module_name(name) for name in s.layers))
    modules = [_module(root, name) for name in layers]
    params = dict(s.params)
    if s.remedy is Remedy.PSEUDO_NORM:
        kwargs = {"scale": float(params.get("scale", 1.0)), **options.pseudo_norm_kwargs}
        for name, module in zip(layers, modules, strict=True):
            _insert_after(patched, name, module, PseudoNorm(**kwargs))
    elif s.remedy is Remedy.RESCALE:
        gains: dict[str, float] = {}
        for name, gain in params["gains"].items():
            gains.setdefault(module_name(name), float(gain))  # a shared module: its first call's gain
        for name, gain in gains.items():
            apply_rescale(_module(root, name), gain)
    elif s.remedy is Remedy.REGULARIZE:
        patched.penalties.append((modules, float(params["lambda"])))
    elif s.remedy is Remedy.CLIP:
        patched.clip_norm = float(params.get("max_norm", 1.0))
    elif s.remedy is Remedy.ACTIVATION:
        make = _ACTIVATIONS.get(str(params.get("activation", "ReLU")))
        if make is None:
            return f"unknown activation {params.get('activation')!r}"
        for name in layers:
            _replace(root, name, make(params))
        if params.get("init"):
            _init([m for m in root.modules() if isinstance(m, WEIGHTED)], {"scheme": params["init"]})
    elif s.remedy is Remedy.NORMALIZATION:
        norms = params["norm"]
        for name, module in zip(layers, modules, strict=True):
            kind = norms[name] if isinstance(norms, dict) else norms
            _insert_after(patched, name, module, _make_norm(str(kind), module))
    elif s.remedy is Remedy.INIT:
        if params.get("scheme") == "orthogonal_":
            for module in modules:
                _init_recurrent(module, params)
        else:
            _init([m for m in modules if isinstance(m, WEIGHTED)], params)
    elif s.remedy is Remedy.RESIDUAL and "block" in params:
        blocks = residual_blocks(root, layers, int(params["block"]))
        if not blocks:
            return "no run of equal-shape layers in an nn.Sequential to wrap; add the skip connections in code"
        for first, last in blocks:
            _add_skip(_module(root, first), _module(root, last))
    elif s.remedy is Remedy.GATED_RECURRENT:
        for name, module in zip(layers, modules, strict=True):
            if not isinstance(module, nn.RNN):
                return f"'{name}' is a {type(module).__name__}, not an nn.RNN"
            _replace(root, name, gru_like(module))
    else:
        return f"'{s.remedy.value}' needs a change to the model's code; it cannot be applied in memory"
    return None


def residual_blocks(root: nn.Module, names: Sequence[str], block: int) -> list[tuple[str, str]]:
    """Where skip connections ``x + f(x)`` go without changing any shape: in each ``nn.Sequential`` holding the named
    weighted layers, ``block`` consecutive weighted layers with what follows each of them (activations, norms) form
    one block, kept only when its output has its input's shape (Linear: in = out features; convolutions: in = out
    channels, stride 1, size-preserving padding). Returns (first, last) module names per block."""
    wanted = set(names)
    blocks: list[tuple[str, str]] = []
    for parent_name, parent in root.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        prefix = f"{parent_name}." if parent_name else ""
        children = [(f"{prefix}{k}", m) for k, m in parent.named_children()]
        starts = [i for i, (name, _) in enumerate(children) if name in wanted]
        units = [(i, (starts[j + 1] if j + 1 < len(starts) else len(children)) - 1) for j, i in enumerate(starts)]
        for j in range(0, len(units) - block + 1, block):
            first, last = units[j][0], units[j + block - 1][1]
            span = [m for _, m in children[first : last + 1]]
            if _keeps_shape(span):
                blocks.append((children[first][0], children[last][0]))
    return blocks


def _keeps_shape(modules: Sequence[nn.Module]) -> bool:
    weighted = [m for m in modules if isinstance(m, WEIGHTED)]
    if not weighted or any(not isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) for m in weighted):
        return False
    first, last = weighted[0], weighted[-1]
    if isinstance(first, nn.Linear):
        return isinstance(last, nn.Linear) and first.in_features == last.out_features
    for m in weighted:
        if not isinstance(m, nn.modules.conv._ConvNd) or m.transposed or any(s != 1 for s in m.stride):
            return False
        sizes = zip(m.padding, m.dilation, m.kernel_size, strict=True)
        if m.padding != "same" and any(not isinstance(p, int) or 2 * p != d * (k - 1) for p, d, k in sizes):
            return False
    return (
        isinstance(first, nn.modules.conv._ConvNd)
        and isinstance(last, nn.modules.conv._ConvNd)
        and (first.in_channels == last.out_channels)
    )


def _add_skip(first: nn.Module, last: nn.Module) -> None:
    """``x + f(x)`` around the modules from ``first`` to ``last``, as hooks: every layer keeps its name."""
    inputs: list[torch.Tensor] = []

    def remember(_m: nn.Module, args: tuple[Any, ...]) -> None:
        inputs.append(args[0])

    def add(_m: nn.Module, _args: Any, output: Any) -> Any:
        x = inputs.pop()
        return output + x if isinstance(output, torch.Tensor) and output.shape == x.shape else output

    first.register_forward_pre_hook(remember)
    last.register_forward_hook(add)


def gru_like(rnn: nn.RNN) -> nn.GRU:
    """An ``nn.GRU`` with the RNN's interface (sizes, layers, bias, batch_first, dropout, direction): it takes the
    same input and initial state and returns the same ``(output, h_n)``."""
    weight = rnn.weight_ih_l0
    return nn.GRU(
        rnn.input_size,
        rnn.hidden_size,
        num_layers=rnn.num_layers,
        bias=rnn.bias,
        batch_first=rnn.batch_first,
        dropout=float(rnn.dropout),
        bidirectional=rnn.bidirectional,
        device=weight.device,
        dtype=weight.dtype,
    )


def _insert_after(patched: Patched, name: str, module: nn.Module, new: nn.Module) -> None:
    device, dtype = _placement(module)
    new = new.to(device=device, dtype=dtype) if dtype is not None else new.to(device)
    key = f"{type(new).__name__.lower()}_after_{name.replace('.', '_') or 'root'}"
    patched.added[key] = new

    def hook(_m: nn.Module, _inputs: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return new(output)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (new(output[0]), *output[1:])
        return output

    module.register_forward_hook(hook)


def _placement(module: nn.Module) -> tuple[torch.device, torch.dtype | None]:
    for p in module.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), None


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = _module(root, parent_name)
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and child.isdigit():
        parent[int(child)] = new
    else:
        setattr(parent, child, new)


def _make_norm(kind: str, module: nn.Module) -> nn.Module:
    features = getattr(module, "out_features", None) or getattr(module, "out_channels", None)
    if features is None:
        raise ProbeError(f"cannot size a {kind} for {type(module).__name__}: it has no out_features/out_channels")
    if kind == "LayerNorm":
        return nn.LayerNorm(features)
    norm = getattr(nn, kind, None)
    if norm is None or not kind.startswith("BatchNorm"):
        raise ProbeError(f"unknown normalization {kind!r}; use BatchNorm1d/2d/3d or LayerNorm")
    return norm(features)  # type: ignore[no-any-return]


def _init(modules: Sequence[nn.Module], params: dict[str, Any]) -> None:
    scheme = str(params.get("scheme", "kaiming_normal_"))
    with torch.no_grad():
        for m in modules:
            weight = m.weight
            assert isinstance(weight, torch.Tensor)
            if scheme == "xavier_uniform_":
                nn.init.xavier_uniform_(weight, gain=float(params.get("gain", 1.0)))
            elif scheme == "xavier_normal_":
                nn.init.xavier_normal_(weight, gain=float(params.get("gain", 1.0)))
            elif scheme == "kaiming_normal_":
                nn.init.kaiming_normal_(
                    weight,
                    a=float(params.get("a", 0.0)),
                    mode=params.get("mode", "fan_in"),
                    nonlinearity=params.get("nonlinearity", "relu"),
                )
            elif scheme == "kaiming_uniform_":
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            else:
                raise ProbeError(f"unknown init scheme {scheme!r}")
            bias = getattr(m, "bias", None)
            if bias is not None:
                nn.init.constant_(bias, float(params.get("bias", 0.0)))


def _init_recurrent(module: nn.Module, params: dict[str, Any]) -> None:
    """Orthogonal recurrent weights (each gate's block), and an LSTM's forget-gate bias set to ``forget_bias``."""
    hidden = getattr(module, "hidden_size", None)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("weight_hh") and hidden:
                for block in torch.split(p, hidden, dim=0):
                    nn.init.orthogonal_(block)
            elif name.startswith("bias_hh") and isinstance(module, nn.LSTM) and hidden:
                p.zero_()
                p[hidden : 2 * hidden] = float(params.get("forget_bias", 1.0))
